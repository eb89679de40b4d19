"""The GPU benchmark's CPU dry run: every part of the script runs (tiny model, tiny shapes); CUDA-only parts say so."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from vdsr.bench.scripts.gpu_speed import app


def test_dry_run_writes_every_table(tmp_path: Path, data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["--dry-run", "--output-dir", str(tmp_path), "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    (report,) = tmp_path.glob("cpu-dry-run-*.json")
    data = json.loads(report.read_text())
    measured = [r for r in data["backends"] if "error" not in r]
    assert {r["backend"] for r in measured} == {"torch eager fp32", "torch fp16 channels_last"}
    assert all(r["mp_per_s"] > 0 and r["max_abs_error_vs_fp32"] < 0.01 for r in measured)
    assert {r["backend"]: r["error"] for r in data["backends"] if "error" in r}["torch fp16 CUDA graph"].endswith(
        "needs CUDA"
    )
    assert [(r["dataset"], r["scale"]) for r in data["paper_table"]] == [
        (d, s) for d in ("Set5", "Set14", "B100", "Urban100") for s in (2, 3, 4)
    ]
    assert data["memory_8k"] == {"skipped": "needs CUDA"} and len(data["fp16_cost"]) == 9
    assert report.with_suffix(".md").read_text().startswith("# VDSR GPU speed")
