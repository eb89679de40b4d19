#!/usr/bin/env bash
# Issue 38 part 3: a quantisation-aware fine-tune of the shipped vdsr_real (its own mix of scales, JPEG and noise,
# seed 0: its own patch set), 1000 steps at lr 2e-5; resumed when its checkpoint is there.
set -u
cd /work/runs/qat
T=/work/qatenv/bin/vdsr-train
name=${1:-run2}
if [ -f $name/vdsr.json ]; then exit 0; fi
if [ -f $name/checkpoint.safetensors ]; then
  exec $T --output $name --resume --init vdsr_real --data-dir /work/shared/datasets --cache-dir /work/runs/cache --no-bf16 >> $name.out 2>&1
fi
exec $T --output $name --init vdsr_real --data-dir /work/shared/datasets --cache-dir /work/runs/cache --no-bf16 \
  --qat inner --draws-per-image 6 --scale 1.5 --scale 2 --scale 2.5 --scale 3 --scale 3.5 --scale 4 \
  --jpeg-probability 0.3 --jpeg-quality 50-85 --noise-probability 0.05 --noise-sigma 3-6 \
  --validate-scale 2 --validate-scale 4 --validate-degradation bicubic --validate-degradation jpeg:75 \
  --lr 2e-5 --epochs 0.0738 --checkpoint-every 50 --validate-every 500 >> $name.out 2>&1
