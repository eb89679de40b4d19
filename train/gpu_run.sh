#!/usr/bin/env bash
# The one device call of issue 19 (run by the `device` tool in the repository root, with carry: gpu_carry and
# models/_version.py): lay the package out as it installs (models/ is `vdsr`), then train within the budget.
# Prepare here first: python -m vdsr.train.gpu_train pack --data-dir ../shared/datasets --out gpu_carry/pack.npz
set -euo pipefail
site=/tmp/vdsr_site
rm -rf "$site" && mkdir -p "$site/vdsr"
cp -r models/. "$site/vdsr/"
for part in runtime bench train export; do cp -r "$part" "$site/vdsr/$part"; done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
PYTHONPATH="$site" PYTHONUNBUFFERED=1 python3 -m vdsr.train.gpu_train train --pack gpu_carry/pack.npz \
  --minutes "${MINUTES:-8.5}" --out "${OUT:?the device tool sets OUT}" 2>&1 | tee "$OUT/stdout.log"
