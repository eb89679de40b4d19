"""vdsr-train end to end on the real training images (one step), and vdsr-bench on trained weights."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import torch
from extras import without
from typer.testing import CliRunner

from vdsr.bench.cli import app as bench_app
from vdsr.networks import SRCNN, VDSR, SRCNNConfig, VDSRConfig
from vdsr.train.cli import app as train_app
from vdsr.weights import save_weights

runner = CliRunner()


def test_train_one_step_then_resume(data_dir: Path, tmp_path: Path) -> None:
    args = [
        "--output",
        str(tmp_path / "run"),
        "--data-dir",
        str(data_dir),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--scale",
        "4",
        "--patch-size",
        "96",
        "--batch-size",
        "2",
        "--device",
        "cpu",
    ]
    args += ["--final-validation", "Set5", "--max-steps", "1", "--loss", "l1", "--bf16"]
    result = runner.invoke(train_app, args)
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "run" / "vdsr.json").read_text())
    assert card["steps"] == 1 and not card["finished_schedule"] and card["scales"] == [4]
    assert card["recipe"]["loss"] == "l1" and card["recipe"]["optimizer"] == "adamw"  # the fast recipe, loss replaced
    progress = [line for line in result.stderr.splitlines() if line.startswith("step: ")]  # not a terminal: plain
    assert progress and all(re.match(r"step: [01]/1 steps", line) for line in progress), progress  # the total known
    assert re.match(r"step: 1/1 steps, loss \d\.\d{3}e[-+]\d+, ", progress[-1]) and "\x1b[" not in result.stderr
    assert set(card["training_data"]) == {"T91", "BSD200"} and card["training_data"]["T91"]["files"] == 91
    assert [(c["dataset"], c["scale"]) for c in card["validation"]] == [("Set5", 4)]
    again = runner.invoke(train_app, args)  # the checkpoint is there: refuse to overwrite it
    assert again.exit_code == 2 and "pass --resume" in again.stderr  # bad usage, before any data work
    keep = ["--output", str(tmp_path / "run"), "--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "cache")]
    keep += ["--final-validation", "Set5", "--max-steps", "2", "--resume", "--no-bf16"]
    resumed = runner.invoke(train_app, keep)
    assert resumed.exit_code == 0, resumed.output  # bf16 may change on resume: the arithmetic, not what is learnt
    progress = [line for line in resumed.stderr.splitlines() if line.startswith("step: ")]
    assert progress[0].startswith("step: 1/2 steps") and progress[-1].startswith("step: 2/2 steps, loss ")
    card = json.loads((tmp_path / "run" / "vdsr.json").read_text())
    assert card["steps"] == 2 and card["recipe"]["bf16"] is False and card["recipe"]["loss"] == "l1"
    lines = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["bf16"]) for r in lines if "loss" in r] == [(1, True), (2, False)]  # the log says which


def test_resume_errors_are_clear(data_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.safetensors").write_bytes(b"not a checkpoint")
    base = ["--output", str(run_dir), "--data-dir", str(data_dir), "--device", "cpu", "--resume"]
    corrupt = runner.invoke(train_app, base)
    assert corrupt.exit_code == 1 and "not a readable checkpoint" in corrupt.stderr
    changed = runner.invoke(train_app, [*base, "--lr", "0.1", "--epochs", "2", "--scale", "2", "--loss", "l1"])
    assert changed.exit_code == 2 and "keeps its settings" in changed.output
    assert all(flag in changed.output for flag in ("--epochs", "--lr", "--scale", "--loss"))


def test_resume_refusals_and_the_early_stop_exit_code(data_dir: Path, tmp_path: Path) -> None:
    base = ["--output", str(tmp_path / "run"), "--data-dir", str(data_dir), "--device", "cpu"]
    nothing = runner.invoke(train_app, [*base, "--resume"])  # a mistyped --output must not start a fresh run
    assert nothing.exit_code == 2 and "no checkpoint to continue" in nothing.output
    assert not (tmp_path / "run").exists()
    test_set = runner.invoke(train_app, [*base, "--final-validation", "B100"])  # never score a reported set
    assert test_set.exit_code == 2 and "B100" in test_set.output
    args = [
        *base,
        "--cache-dir",
        str(tmp_path / "cache"),
        "--scale",
        "4",
        "--patch-size",
        "96",
        "--batch-size",
        "2",
        "--final-validation",
        "Set5",
        "--max-minutes",
        "0",
    ]
    stopped = runner.invoke(train_app, args)  # stops on time after one step: a checkpoint, no weights
    assert stopped.exit_code == 3, stopped.output
    assert "continue with vdsr-train" in stopped.stderr and not (tmp_path / "run" / "vdsr.safetensors").exists()
    changed = runner.invoke(train_app, [*base, "--resume", "--model", "srcnn", "--seed", "1"])
    assert changed.exit_code == 2 and "--architecture" in changed.output and "--seed" in changed.output  # --model too
    for bad in (
        ["--average-from", "0"],
        ["--average-from", "5", "--checkpoint-every", "0"],
        ["--average-from", "6", "--max-steps", "5"],  # found by review: refused only after the patches were built
    ):
        refused = runner.invoke(train_app, [*base, "--output", str(tmp_path / "other"), *bad])  # before any patches
        assert refused.exit_code == 2 and "--average-from" in refused.output and not (tmp_path / "other").exists()
    scale = runner.invoke(train_app, [*base, "--output", str(tmp_path / "other"), "--validate-scale", "1.1"])
    assert scale.exit_code == 2 and scale.stderr.startswith("error: --validate-scale: ")  # found by review: --scale


def test_train_without_data_is_one_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(
        train_app, ["--output", str(tmp_path / "run"), "--data-dir", str(tmp_path), "--device", "cpu"]
    )
    assert result.exit_code == 1 and "T91: folder" in result.stderr


def test_bench_learnt_methods_with_given_weights(data_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    vdsr = VDSR(VDSRConfig(depth=3, channels=8))
    for p in vdsr.parameters():  # a zero residual: the model returns the bicubic input exactly
        torch.nn.init.zeros_(p)
    save_weights(tmp_path / "v.safetensors", vdsr, [2])
    save_weights(tmp_path / "s.safetensors", SRCNN(SRCNNConfig(kernels=(3, 1, 3), channels=(4, 4))), [2])
    args = [
        "--data-dir",
        str(data_dir),
        "-d",
        "Set5",
        "-s",
        "2",
        "-m",
        "bicubic",
        "-m",
        "vdsr",
        "-m",
        "srcnn",
        "--weights",
        str(tmp_path / "v.safetensors"),
        "--weights",
        str(tmp_path / "s.safetensors"),
        "--json",
        str(tmp_path / "r.json"),
    ]
    result = runner.invoke(bench_app, args)
    assert result.exit_code == 0, result.output
    cells = {r["method"]: r for r in json.loads((tmp_path / "r.json").read_text())["results"]}
    assert cells["vdsr"]["backend"] == "torch-cpu" and cells["srcnn"]["backend"] == "torch-cpu"
    assert abs(cells["vdsr"]["psnr"] - cells["bicubic"]["psnr"]) < 1e-3  # fp32 ILR vs fp64: same to 0.001 dB
    assert cells["vdsr"]["paper_psnr"] == 37.53 and cells["srcnn"]["paper_psnr"] == 36.66


def test_bench_learnt_method_without_weights_is_an_error(data_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "none.safetensors"
    result = runner.invoke(
        bench_app, ["--data-dir", str(data_dir), "-d", "Set5", "-m", "vdsr", "--weights", str(missing)]
    )
    assert result.exit_code == 1 and f"{missing}: no such weights file" in result.stderr
    save_weights(tmp_path / "s.safetensors", SRCNN(), [2])
    wrong = runner.invoke(
        bench_app,
        ["--data-dir", str(data_dir), "-d", "Set5", "-m", "vdsr", "--weights", str(tmp_path / "s.safetensors")],
    )
    assert wrong.exit_code == 2 and "holds srcnn weights, not vdsr" in wrong.stderr and wrong.stdout == ""


BLOCKED_IMPORTS = without(("torch", "onnx", "onnxscript"), module="vdsr.train.cli", prog="vdsr-train")  # [cpu] only


def test_without_the_train_extra_help_works_and_a_run_says_what_to_install(tmp_path: Path) -> None:
    def train(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", BLOCKED_IMPORTS, *args]
        return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)

    for option in ("--help", "--version"):
        shown = train(option)
        assert shown.returncode == 0 and "vdsr-train" in shown.stdout and not shown.stderr, shown.stderr
    refused = train("--output", str(tmp_path / "run"))
    assert refused.returncode == 2 and not refused.stdout
    assert refused.stderr == 'error: vdsr-train needs torch: pip install "vdsr[train]"\n'
    assert list(tmp_path.iterdir()) == []
