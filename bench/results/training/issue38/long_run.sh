#!/usr/bin/env bash
# Issue 38 part 1: the long run. The shipped vdsr fine-tuned for 5 epochs (MSE, 41x41, lr 1e-4 cosine, EMA 0.999,
# seed 1: a new patch order), from commit 3872c13 in its own worktree (/work/long-wt, environment /work/longenv);
# resumed when its checkpoint is there.
set -u
cd /work/runs/long
T=/work/longenv/bin/vdsr-train
name=${1:-run}
if [ -f $name/vdsr.json ]; then exit 0; fi
# bf16 autocast where it trains faster (AMX, AMD AVX-512-BF16: twice fp32's rate), fp32 elsewhere (twelfth session on)
P=--no-bf16
if /work/longenv/bin/python -c "import sys; from vdsr.runtime.machine import bf16_training_faster as f; sys.exit(not f())" 2>/dev/null; then P=--bf16; fi
if [ -f $name/checkpoint.safetensors ]; then
  exec $T --output $name --resume --init vdsr --data-dir /work/shared/datasets --cache-dir /work/runs/cache $P >> $name.out 2>&1
fi
exec $T --output $name --init vdsr --data-dir /work/shared/datasets --cache-dir /work/runs/cache --no-bf16 \
  --lr 1e-4 --ema 0.999 --epochs 5 --seed 1 --checkpoint-every 100 --validate-every 2000 >> $name.out 2>&1
