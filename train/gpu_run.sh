#!/usr/bin/env bash
# The one device call of issue 19 / 41 (run by the `device` tool in the repository root, with carry: gpu_carry and
# models/_version.py): lay the package out as it installs (models/ is `vdsr`), then train within the budget with the
# one trainer's GPU recipe. Prepare here first, once: copy the verified sets the run reads into the carry folder
#   mkdir -p gpu_carry/datasets && cp -r ../shared/datasets/{T91,BSD200,Set5,Set14} gpu_carry/datasets/
set -euo pipefail
site=/tmp/vdsr_site
rm -rf "$site" && mkdir -p "$site/vdsr"
cp -r models/. "$site/vdsr/"
for part in runtime bench train export; do cp -r "$part" "$site/vdsr/$part"; done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
PYTHONPATH="$site" PYTHONUNBUFFERED=1 python3 -m vdsr.train --output "${OUT:?the device tool sets OUT}/run" \
  --recipe gpu --budget-minutes "${MINUTES:-8.5}" --data-dir gpu_carry/datasets --validate-every 500 \
  --cache-dir /tmp/vdsr_cache 2>&1 | tee "$OUT/stdout.log"
