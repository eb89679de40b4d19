#!/usr/bin/env bash
# Issue 38 part 3, run3: 1000 more quantisation-aware steps (--qat inner) from run2's end (qat_inner_vdsr_real,
# step 1000), x4 drawn twice as often (its selection cost is the one over the export's rule), seed 1 (new patches),
# lr 2e-5 cosine; from commit c30adb2 in its own worktree (/work/qat-wt, environment /work/qatenv); resumed when its
# checkpoint is there. The init file is bench/results/training/issue38/qat_inner_vdsr_real.safetensors (same sha256).
set -u
cd /work/runs/qat
T=/work/qatenv/bin/vdsr-train
I=/work/runs/qat/qat_inner_step1000.safetensors
name=${1:-run3}
if [ -f $name/vdsr.json ]; then exit 0; fi
if [ -f $name/checkpoint.safetensors ]; then
  exec $T --output $name --resume --init $I --data-dir /work/shared/datasets --cache-dir /work/runs/cache --no-bf16 >> $name.out 2>&1
fi
exec $T --output $name --init $I --data-dir /work/shared/datasets --cache-dir /work/runs/cache --no-bf16 \
  --qat inner --draws-per-image 6 --scale 1.5 --scale 2 --scale 2.5 --scale 3 --scale 3.5 --scale 4 --scale-weight 4=2 \
  --jpeg-probability 0.3 --jpeg-quality 50-85 --noise-probability 0.05 --noise-sigma 3-6 \
  --validate-scale 2 --validate-scale 4 --validate-degradation bicubic --validate-degradation jpeg:75 \
  --lr 2e-5 --epochs 0.0738 --seed 1 --checkpoint-every 50 --validate-every 500 >> $name.out 2>&1
