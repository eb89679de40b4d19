#!/usr/bin/env bash
# Issue 38 part 1: short fine-tunes of the shipped vdsr, 1000 steps of 64 41x41 patches each (or the same pixels).
set -u
cd /work/runs
T=/work/trainenv/bin/vdsr-train
common="--init vdsr --data-dir /work/shared/datasets --cache-dir /work/runs/cache --no-bf16 --validate-every 250 --checkpoint-every 50"
run() { name=$1; shift
  if [ -f $name/vdsr.json ]; then return; fi
  if [ -f $name/checkpoint.safetensors ]; then $T --output $name --resume --init vdsr --data-dir /work/shared/datasets --cache-dir /work/runs/cache --no-bf16 >> $name.out 2>&1
  else $T --output $name $common "$@" >> $name.out 2>&1; fi
}
for v in "$@"; do
  case $v in
    base) run base --lr 1e-4 --epochs 0.14763 ;;
    l1) run l1 --lr 1e-4 --loss l1 --epochs 0.14763 ;;
    lr3) run lr3 --lr 3e-4 --epochs 0.14763 ;;
    ema) run ema --lr 1e-4 --ema 0.999 --epochs 0.14763 ;;
    p82) run p82 --lr 1e-4 --patch-size 82 --batch-size 16 --epochs 0.14763 ;;
    l1mse) run l1mse --lr 1e-4 --loss l1_mse --epochs 0.14763 ;;
    *) echo "unknown $v" ;;
  esac
done
