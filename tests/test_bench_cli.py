from __future__ import annotations

import csv
import errno
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vdsr.bench import cli
from vdsr.bench.cli import app

runner = CliRunner()


def test_bench_set5_writes_json_csv_markdown(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--data-dir", str(data_dir), "--dataset", "Set5", "--scale", "2,4", "--scale", "4", "--method", "bicubic",
            "--json", str(out / "r.json"), "--csv", str(out / "r.csv"), "--markdown", str(out / "r.md")]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "33.66" in result.stdout and "Set5" in result.stdout  # the paper's value is shown next to ours
    document = json.loads((out / "r.json").read_text())
    assert set(document) == {"results", "per_image", "failures", "left_out", "environment"}
    assert [(r["dataset"], r["method"], r["scale"]) for r in document["results"]] == [
        ("Set5", "bicubic", 2),
        ("Set5", "bicubic", 4),
    ]
    required = {"dataset", "method", "scale", "psnr", "ssim", "images", "seconds_per_image", "backend", "precision"}
    for row in document["results"]:
        assert required <= set(row) and row["images"] == 5 and row["seconds_per_image"] > 0
    assert abs(document["results"][0]["psnr"] - 33.66) < 0.02
    assert len(document["per_image"]) == 10
    assert {"vdsr", "git_commit", "python", "numpy", "cpu", "gpu", "command"} <= set(document["environment"])
    rows = list(csv.DictReader((out / "r.csv").open()))
    assert [r["scale"] for r in rows] == ["2", "4"] and rows[0]["paper_psnr"] == "33.66"
    assert "| Set5 | x2 | bicubic | 5 |" in (out / "r.md").read_text()
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_bad_image_in_folder_fails_that_file_only(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    rgb = np.random.default_rng(1).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "good.png")
    (folder / "bad.png").write_text("not a png")
    result = runner.invoke(app, ["--dataset", str(folder), "--scale", "2", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 1
    assert f"{folder / 'bad.png'}: not an image file" in result.stderr
    document = json.loads((tmp_path / "r.json").read_text())
    assert [r["image"] for r in document["per_image"]] == ["good.png"]
    assert document["results"][0]["dataset"] == "photos" and document["results"][0]["images"] == 1
    assert document["failures"][0]["image"] == "bad.png"


def test_report_that_fails_at_write_time_is_one_line_and_other_reports_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (48, 48), "gray").save(folder / "a.png")
    real_write = cli.write_report

    def disk_full_for_json(path: Path, text: str) -> None:  # what a full disk does once the run is over
        if path.suffix == ".json":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, text)

    monkeypatch.setattr(cli, "write_report", disk_full_for_json)
    args = [
        "--dataset",
        str(folder),
        "--scale",
        "2",
        "--json",
        str(tmp_path / "r.json"),
        "--csv",
        str(tmp_path / "r.csv"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert f"{tmp_path / 'r.json'}: cannot write (No space left on device)" in result.stderr
    assert (tmp_path / "r.csv").is_file()


def test_report_name_too_long_fails_before_the_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--dataset", str(tmp_path), "--json", str(tmp_path / ("r" * 300 + ".json"))])
    assert result.exit_code == 2 and "too long" in result.output


def test_report_path_under_a_file_fails_before_the_run(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where a folder is expected")
    result = runner.invoke(app, ["--dataset", str(tmp_path), "--json", str(blocker / "r.json")])
    assert result.exit_code == 2 and "is not a writable folder" in result.output


def test_bad_scale_is_a_usage_error() -> None:
    for bad in ("1.5", "1", "²", "x"):
        result = runner.invoke(app, ["--dataset", "Set5", "--scale", bad])
        assert result.exit_code == 2, bad
        assert "scale must be an integer >= 2" in result.output


def test_unwritable_report_path_fails_before_the_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--dataset", str(tmp_path), "--json", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in result.output


def test_two_folders_with_one_name_are_not_merged(tmp_path: Path) -> None:
    for parent in ("a", "b"):
        (tmp_path / parent / "photos").mkdir(parents=True)
        Image.new("RGB", (48, 48), "gray").save(tmp_path / parent / "photos" / "x.png")
    result = runner.invoke(app, ["-d", str(tmp_path / "a" / "photos"), "-d", str(tmp_path / "b" / "photos"), "-s", "2"])
    assert result.exit_code == 1 and "already named 'photos'" in result.stderr


def test_exact_reconstruction_is_null_psnr_in_strict_json(tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (48, 48), (90, 90, 90)).save(tmp_path / "flat" / "gray.png")  # bicubic reproduces it exactly
    result = runner.invoke(app, ["-d", str(tmp_path / "flat"), "-s", "2", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "r.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert document["per_image"][0]["psnr"] is None and document["results"][0]["psnr"] is None
    assert document["per_image"][0]["ssim"] == pytest.approx(1.0)


def test_unknown_dataset_is_reported(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--dataset", "Set6", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "neither a known set" in result.stderr


def test_a_backend_failure_stops_the_bench_with_its_exit_code(
    tmp_path: Path, tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from vdsr.errors import BackendError
    from vdsr.runtime.backends.onnx_runtime import OnnxRuntimeBackend

    def lost(self: OnnxRuntimeBackend, batch: np.ndarray) -> np.ndarray:
        raise BackendError("ONNX Runtime failed on a batch of shape (1, 1, 48, 48): device lost")

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    monkeypatch.setattr(OnnxRuntimeBackend, "run", lost)
    result = runner.invoke(app, ["--dataset", str(tmp_path), "-m", "vdsr", "--weights", str(tiny_model["onnx"])])
    assert result.exit_code == 4 and "device lost" in result.stderr
