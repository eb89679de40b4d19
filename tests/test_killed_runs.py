"""A folder run killed at random moments (SIGKILL: no clean-up of any kind) leaves only complete outputs, and a rerun
with --skip-existing completes the folder with the files an uninterrupted run writes, and no temporary files."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from vdsr.runtime.cli import app

KILLS = 6


def entries(folder: Path) -> set[str]:
    return set(os.listdir(folder)) if folder.exists() else set()


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")} if folder.exists() else {}


def test_killed_runs_leave_complete_files_and_a_rerun_completes(tmp_path: Path, tiny_model: dict[str, Path]) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        pixels = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photos / f"{i:02d}.{'png' if i % 3 else 'jpg'}")
    args = [str(photos), "-s", "2", "--model", str(tiny_model["onnx"])]
    reference = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "reference")])
    assert reference.exit_code == 0, reference.output
    expected = outputs(tmp_path / "reference")
    out = tmp_path / "out"
    moments = random.Random(20161121)
    program = [sys.executable, "-c", "from vdsr.runtime.cli import app; app()"]
    command = [*program, *args, "-o", str(out), "--skip-existing"]
    for _ in range(KILLS):
        before = entries(out)
        run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while run.poll() is None and time.monotonic() < deadline and not entries(out) - before:
            time.sleep(0.005)  # wait until this run writes (a temporary file appears), then kill it during the run
        time.sleep(moments.uniform(0.0, 0.3))
        run.send_signal(signal.SIGKILL)
        run.wait()
        for name, data in outputs(out).items():  # whatever is there is whole
            assert data == expected[name], f"{name} is not the complete result after a kill"
    final = CliRunner().invoke(app, [*args, "-o", str(out), "--skip-existing"])
    assert final.exit_code == 0, final.output
    assert outputs(out) == expected
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temporary files were left"
