#!/usr/bin/env bash
# Issue 38 part 1, SRCNN second restarts: x3 (then x4) from its own shipped weights (init_x3/init_x4.safetensors:
# models/srcnn_x3.safetensors and srcnn_x4.safetensors as of commit 9238679), 12 epochs (AdamW lr 1e-3 cosine, MSE,
# 41x41), as the shipped x2 was made from the first x2; from commit 3872c13 in the long run's worktree and
# environment; resumed when its checkpoint is there. Usage: srcnn_run2.sh x3b (or x4b).
set -u
cd /work/runs/srcnn
T=/work/longenv/bin/vdsr-train
name=${1:-x3b}
scale=${name:1:1}
I=/work/runs/srcnn/init_${name%b}.safetensors
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
if [ -f $name/srcnn.json ]; then exit 0; fi
if [ -f $name/checkpoint.safetensors ]; then
  exec $T --output $name --resume --init $I --data-dir /work/shared/datasets --cache-dir /work/runs/cache --no-bf16 >> $name.out 2>&1
fi
exec $T --output $name --model srcnn --scale $scale --init $I --data-dir /work/shared/datasets --cache-dir /work/runs/cache \
  --no-bf16 --epochs 12 --lr 1e-3 --seed 0 --checkpoint-every 500 --validate-every 3000 >> $name.out 2>&1
