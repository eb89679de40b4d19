"""torchrun (DDP, gloo on CPUs): 2 processes take the steps 1 process takes with the same global batch, a run resumes
with another number of processes, and a signal to one rank stops both after the same step with a checkpoint."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from vdsr.errors import EXIT_STOPPED_EARLY
from vdsr.train.checkpoint import load_checkpoint


def settings(data_dir: Path, cache: Path) -> list[str]:
    """SRCNN x4 with the paper recipe (SGD: a gradient off by a factor would show, as AdamW's updates would not)."""
    return [
        "--data-dir",
        str(data_dir),
        "--cache-dir",
        str(cache),
        "--model",
        "srcnn",
        "--recipe",
        "paper",
        "--scale",
        "4",
        "--patch-size",
        "96",
        "--no-bf16",
        "--validate-every",
        "0",
        "--checkpoint-every",
        "0",
        "--final-validation",
        "Set5",
        "--device",
        "cpu",
    ]


def torchrun(processes: int, args: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(processes),
        "-m",
        "vdsr.train",
        *args,
    ]


def vdsr_train(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "vdsr.train", *args]


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def largest_difference(a: Path, b: Path) -> float:
    first, second = load_file(str(a)), load_file(str(b))
    assert first.keys() == second.keys()
    return max(float(np.abs(first[k] - second[k]).max()) for k in first)


def test_two_processes_train_as_one_with_the_same_global_batch_and_resume_in_one(
    data_dir: Path, tmp_path: Path
) -> None:
    common = settings(data_dir, tmp_path / "cache")
    two = run(torchrun(2, ["--output", str(tmp_path / "two"), *common, "--batch-size", "4", "--max-steps", "2"]))
    assert "on 2 ranks (cpu)" in two.stderr and two.stderr.count("stopped at step 2") == 1  # rank 0 speaks
    run(vdsr_train(["--output", str(tmp_path / "one"), *common, "--batch-size", "4", "--max-steps", "2"]))
    run(vdsr_train(["--output", str(tmp_path / "half"), *common, "--batch-size", "2", "--max-steps", "2"]))
    weights = "srcnn.safetensors"
    same = largest_difference(tmp_path / "two" / weights, tmp_path / "one" / weights)
    other = largest_difference(tmp_path / "half" / weights, tmp_path / "one" / weights)  # control: half the batch
    assert same <= 1e-5 < 1e-3 < other, (same, other)  # float sums in another order vs another training
    card = json.loads((tmp_path / "two" / "srcnn.json").read_text())
    assert card["steps"] == 2 and card["recipe"]["batch_size"] == 4  # the global batch, whatever the ranks
    resume = ["--output", str(tmp_path / "two"), "--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "cache")]
    run(vdsr_train([*resume, "--resume", "--max-steps", "4"]))  # the 2-process run, continued in 1 process
    run(vdsr_train(["--output", str(tmp_path / "four"), *common, "--batch-size", "4", "--max-steps", "4"]))
    assert largest_difference(tmp_path / "two" / weights, tmp_path / "four" / weights) <= 1e-5


def test_a_signal_to_one_rank_stops_both_with_a_checkpoint(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["--output", str(out), *settings(data_dir, tmp_path / "cache"), "--batch-size", "4"]
    agent = subprocess.Popen(
        torchrun(2, [*args, "--max-steps", "100000"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (out / "train_log.jsonl").is_file():  # rank 0 logs every 20 steps
            assert agent.poll() is None and time.monotonic() < deadline, "the run did not start"
            time.sleep(0.5)
        ranks = subprocess.run(["pgrep", "-P", str(agent.pid)], capture_output=True, text=True, check=False)
        children = {rank_of(int(pid)): int(pid) for pid in ranks.stdout.split()}
        if sorted(children) != [0, 1]:
            pytest.fail(f"expected torchrun's 2 ranks as its children, found {children}")
        os.kill(children[1], signal.SIGTERM)  # rank 1: not the one that writes
        _, stderr = agent.communicate(timeout=120)
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
    assert agent.returncode != 0 and re.search(rf"exitcode\s*:\s*{EXIT_STOPPED_EARLY}\b", stderr)  # rank 0's
    checkpoint = load_checkpoint(out / "checkpoint.safetensors").info
    assert f"stopped at step {checkpoint['step']} (another rank)" in stderr, stderr[-2000:]  # rank 0, for both
    assert checkpoint["step"] >= 20 and not (out / "srcnn.safetensors").exists()
    cache = ["--cache-dir", str(tmp_path / "cache")]
    run(
        vdsr_train(
            [
                "--output",
                str(out),
                "--data-dir",
                str(data_dir),
                *cache,
                "--resume",
                "--max-steps",
                str(checkpoint["step"] + 1),
            ]
        )
    )
    assert json.loads((out / "srcnn.json").read_text())["steps"] == checkpoint["step"] + 1


def rank_of(pid: int) -> int:
    """The RANK torchrun gave a worker process (-1 if it has none)."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next((int(v.split(b"=", 1)[1]) for v in environ if v.startswith(b"RANK=")), -1)
