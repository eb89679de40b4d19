#!/usr/bin/env bash
# Issue 38 part 3, qatcal1: 400 quantisation-aware steps (--qat inner) with the int8 graph's calibrated activation
# ranges (--qat-ranges calibrated) from distil2's end, the targets the shipped vdsr_real's fp32 outputs (--teacher
# vdsr_real --teacher-weight 1), x4 drawn twice as often, seed 4 (new patches), lr 2e-5 cosine; from commit 81f28b0
# in its own worktree (/work/qatcal-wt, environment /work/qatcalenv); resumed when its checkpoint is there.
set -u
cd /work/runs/qatcal
T=/work/qatcalenv/bin/vdsr-train
I=/work/main/bench/results/training/issue38/qat_distil2_vdsr_real.safetensors
name=${1:-qatcal1}
if [ -f $name/vdsr.json ]; then exit 0; fi
if [ -f $name/checkpoint.safetensors ]; then
  exec $T --output $name --resume --init $I --teacher vdsr_real --data-dir /work/shared/datasets --cache-dir /work/runs/cache --no-bf16 >> $name.out 2>&1
fi
exec $T --output $name --init $I --teacher vdsr_real --teacher-weight 1 --data-dir /work/shared/datasets --cache-dir /work/runs/cache --no-bf16 \
  --qat inner --qat-ranges calibrated --draws-per-image 6 --scale 1.5 --scale 2 --scale 2.5 --scale 3 --scale 3.5 --scale 4 --scale-weight 4=2 \
  --jpeg-probability 0.3 --jpeg-quality 50-85 --noise-probability 0.05 --noise-sigma 3-6 \
  --validate-scale 2 --validate-scale 4 --validate-degradation bicubic --validate-degradation jpeg:75 \
  --lr 2e-5 --epochs 0.0296 --seed 4 --checkpoint-every 50 --validate-every 0 >> $name.out 2>&1
