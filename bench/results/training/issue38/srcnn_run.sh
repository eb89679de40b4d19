#!/usr/bin/env bash
# Issue 38 part 1, SRCNN: x3 (then x4) from the shipped SRCNN x2 (20 epochs), 12 epochs (AdamW lr 1e-3 cosine, MSE,
# 41x41), from commit 3872c13 in the long run's worktree and environment, one thread beside the long run; resumed
# when its checkpoint is there. Usage: srcnn_run.sh x3 (or x4).
set -u
cd /work/runs/srcnn
T=/work/longenv/bin/vdsr-train
name=${1:-x3}
scale=${name#x}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ -f $name/srcnn.json ]; then exit 0; fi
if [ -f $name/checkpoint.safetensors ]; then
  exec $T --output $name --resume --init srcnn --data-dir /work/shared/datasets --cache-dir /work/runs/cache --no-bf16 >> $name.out 2>&1
fi
exec $T --output $name --model srcnn --scale $scale --init srcnn --data-dir /work/shared/datasets --cache-dir /work/runs/cache \
  --no-bf16 --epochs 12 --lr 1e-3 --seed 0 --checkpoint-every 500 --validate-every 3000 >> $name.out 2>&1
