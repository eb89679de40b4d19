from __future__ import annotations

import csv
import errno
import json
import os
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
    args = [
        "--data-dir",
        str(data_dir),
        "--dataset",
        "Set5",
        "--scale",
        "2,4",
        "--scale",
        "4",
        "--method",
        "bicubic",
        "--json",
        str(out / "r.json"),
        "--csv",
        str(out / "r.csv"),
        "--markdown",
        str(out / "r.md"),
    ]
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
    result = runner.invoke(
        app, ["--dataset", str(folder), "--scale", "2", "-m", "bicubic", "--json", str(tmp_path / "r.json")]
    )
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
        "-m",
        "bicubic",
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
    for bad in ("1", "2.3", "9", "²", "x", "nan", "inf"):  # 2.5 is a scale (a multiple of 0.25); 2.3 is not
        result = runner.invoke(app, ["--dataset", "Set5", "--scale", bad])
        assert result.exit_code == 2, bad
        assert "--scale: a scale is a number in 1 < s <= 8" in result.output


def test_unwritable_report_path_fails_before_the_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--dataset", str(tmp_path), "--json", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in result.output


def test_two_folders_with_one_name_are_not_merged(tmp_path: Path) -> None:
    for parent in ("a", "b"):
        (tmp_path / parent / "photos").mkdir(parents=True)
        Image.new("RGB", (48, 48), "gray").save(tmp_path / parent / "photos" / "x.png")
    result = runner.invoke(app, ["-d", str(tmp_path / "a" / "photos"), "-d", str(tmp_path / "b" / "photos"), "-s", "2"])
    assert result.exit_code == 2 and "already named 'photos'" in result.stderr and "PSNR" not in result.output


def test_a_flat_image_is_not_scored_and_an_exact_score_is_null_in_strict_json(tmp_path: Path) -> None:
    """PSNR is not defined for a flat ground truth: every method reproduces it up to floating-point error (found by
    review: a black image scored 330 dB and lifted its folder's bicubic cell to 177 dB). It is a failure line naming
    the file; the other images are scored. An exact reconstruction's infinite PSNR is null in strict JSON."""
    from vdsr.bench.harness import BenchRun, ImageResult, Method, method_runner, summarize
    from vdsr.bench.report import to_json

    (tmp_path / "mixed").mkdir()
    Image.new("RGB", (48, 48), (90, 90, 90)).save(tmp_path / "mixed" / "gray.png")
    Image.new("RGB", (48, 48), "black").save(tmp_path / "mixed" / "black.png")
    edged = np.zeros((48, 48, 3), np.uint8)
    edged[:2] = 255  # not flat, but flat where it is scored (shaved 2 px at x2)
    Image.fromarray(edged).save(tmp_path / "mixed" / "edged.png")
    noise = np.random.default_rng(3).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "mixed" / "noise.png")
    result = runner.invoke(
        app, ["-d", str(tmp_path / "mixed"), "-s", "2", "-m", "bicubic", "--json", str(tmp_path / "r.json")]
    )
    assert result.exit_code == 1, result.output
    for name in ("gray", "black", "edged"):
        assert f"{tmp_path / 'mixed' / name}.png: one flat value after shaving; PSNR is not defined" in result.stderr
    document = json.loads((tmp_path / "r.json").read_text())
    assert [r["image"] for r in document["per_image"]] == ["noise.png"]
    assert document["results"][0]["psnr"] == pytest.approx(document["per_image"][0]["psnr"])
    assert document["results"][0]["psnr"] < 20
    exact = ImageResult("d", "bicubic", 2, "x.png", 48, 48, float("inf"), 1.0, 0.1)
    run = BenchRun(
        cells=summarize([exact], [method_runner(Method.bicubic, [])]), images=[exact], failures=[], left_out=[]
    )
    document = json.loads(to_json(run, {}), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert document["per_image"][0]["psnr"] is None and document["results"][0]["psnr"] is None


def test_broken_links_and_fifos_named_as_images_are_failures_not_dropped(tmp_path: Path) -> None:
    """Found by review: a folder's broken link and FIFO were skipped without a word, exit 0."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / "ok.png")
    (folder / "broken.png").symlink_to(folder / "missing.png")
    names = ["broken.png"]
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "fifo.png")
        names.append("fifo.png")
    result = runner.invoke(app, ["-d", str(folder), "-s", "2", "-m", "bicubic"])
    assert result.exit_code == 1
    failed = [line for line in result.stderr.splitlines() if line.startswith("failed: ")]
    assert sorted(Path(line.split(": ")[1]).name for line in failed) == names, result.stderr


def test_bench_usage_edges(tmp_path: Path) -> None:
    """Found by review: an empty --dataset scored the current folder; a folder of subfolders said only "no image
    files"; a --jsonl in a folder not made yet was a traceback."""
    empty = runner.invoke(app, ["-d", "", "-s", "2"])
    assert empty.exit_code == 2 and "--dataset: an empty name" in empty.stderr
    (tmp_path / "nested" / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(tmp_path / "nested" / "sub" / "a.png")
    nested = runner.invoke(app, ["-d", str(tmp_path / "nested"), "-s", "2"])
    assert nested.exit_code != 0 and "subfolders are not read" in nested.stderr
    (tmp_path / "p").mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "p/a.png")
    log = tmp_path / "new" / "deeper" / "log.jsonl"
    made = runner.invoke(app, ["-d", str(tmp_path / "p"), "-s", "2", "-m", "bicubic", "--jsonl", str(log)])
    assert made.exit_code == 0 and len(log.read_text().splitlines()) == 2, made.output


def test_unknown_dataset_is_bad_usage_found_before_any_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt --dataset printed the error, then an empty table, and exited 1."""
    result = runner.invoke(app, ["--dataset", "Set6", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "neither a known set" in result.stderr and result.stdout == ""
    monkeypatch.delenv("VDSR_DATA_DIR", raising=False)
    result = runner.invoke(app, ["--dataset", "Set5"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "No data directory: the known sets are read from <data dir>/<name>/; looked for " in result.stderr
    assert "pass --data-dir DIR or set VDSR_DATA_DIR=DIR" in result.stderr and "--download" in result.stderr


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


def test_a_folder_named_like_a_known_set_is_never_compared_with_the_paper(tmp_path: Path) -> None:
    """`--dataset path/to/Urban100` was scored against the paper's Urban100 column without any hash check."""
    (tmp_path / "Urban100").mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(
        tmp_path / "Urban100" / "img.png"
    )
    files = {kind: tmp_path / f"r.{kind}" for kind in ("json", "csv", "markdown")}
    args = [
        "-d",
        str(tmp_path / "Urban100"),
        "-s",
        "2",
        "-m",
        "bicubic",
        *(a for k, p in files.items() for a in (f"--{k}", str(p))),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Urban100 (unverified folder)" in result.stdout and "26.88" not in result.stdout  # the paper's bicubic x2
    cell = json.loads(files["json"].read_text())["results"][0]
    assert cell["verified"] is False and cell["paper_psnr"] is None
    assert "Urban100,False,bicubic,2,bicubic" in files["csv"].read_text()
    assert "Urban100 (unverified folder)" in files["markdown"].read_text()


def test_scores_are_logged_as_they_come_and_an_interrupted_run_resumes(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 44, 3), dtype=np.uint8)).save(
            folder / f"{i}.png"
        )
    straight = tmp_path / "straight.jsonl"
    base = ["-d", str(folder), "-s", "2,3", "-m", "bicubic"]
    assert runner.invoke(app, [*base, "--jsonl", str(straight), "--json", str(tmp_path / "a.json")]).exit_code == 0
    lines = straight.read_text().splitlines()
    assert json.loads(lines[0])["plan"]["scales"] == [2, 3] and len(lines) == 1 + 3 * 2
    again = runner.invoke(app, [*base, "--jsonl", str(straight)])
    assert again.exit_code == 2 and "pass --resume" in again.stderr  # never overwritten by accident
    interrupted = tmp_path / "interrupted.jsonl"
    interrupted.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])  # two scores, then a line cut by a kill
    resumed = runner.invoke(app, [*base, "--jsonl", str(interrupted), "--resume", "--json", str(tmp_path / "b.json")])
    assert resumed.exit_code == 0 and "2 image scores kept" in resumed.stderr, resumed.output
    first, second = (json.loads((tmp_path / n).read_text())["results"] for n in ("a.json", "b.json"))
    assert [c["psnr"] for c in first] == [c["psnr"] for c in second]
    again = runner.invoke(app, [*base, "--jsonl", str(interrupted), "--resume"])  # the cut line did not poison it
    assert again.exit_code == 0 and "6 image scores kept" in again.stderr, again.output
    other = runner.invoke(app, ["-d", str(folder), "-s", "4", "-m", "bicubic", "--jsonl", str(interrupted), "--resume"])
    assert other.exit_code == 2 and "records another bench" in other.stderr
    typed = lines[0] + "\n" + json.dumps(json.loads(lines[1]) | {"psnr": "abc"}) + "\n"  # a field of the wrong type
    for name, data in {"binary.jsonl": lines[0].encode() + b"\n\xff\xfe\n", "typed.jsonl": typed.encode()}.items():
        (tmp_path / name).write_bytes(data)
        damaged = runner.invoke(app, [*base, "--jsonl", str(tmp_path / name), "--resume"])
        assert damaged.exit_code == 2 and damaged.stderr.startswith("error: --resume: ") and damaged.stdout == ""
    (tmp_path / "empty.jsonl").touch()  # an empty file is a fresh start, with or without --resume
    assert runner.invoke(app, [*base, "--jsonl", str(tmp_path / "empty.jsonl")]).exit_code == 0
    Image.fromarray(np.random.default_rng(9).integers(0, 256, (40, 44, 3), dtype=np.uint8)).save(folder / "0.png")
    edited = runner.invoke(app, [*base, "--jsonl", str(interrupted), "--resume"])  # found by review: was resumed
    assert edited.exit_code == 2 and "records another bench (data sets or their images" in edited.stderr


def test_picture_paths_are_checked_first_and_a_run_with_nothing_to_plot_says_so(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (7, 7)).save(tmp_path / "photos" / "tiny.png")  # too small to score at x2
    (tmp_path / "file").write_text("")
    result = runner.invoke(app, ["-d", str(tmp_path / "photos"), "-s", "2", "--save-images", str(tmp_path / "file")])
    assert result.exit_code == 2 and "--save-images: cannot write" in result.stderr and result.stdout == ""
    result = runner.invoke(app, ["-d", str(tmp_path / "photos"), "-s", "2", "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 1 and "nothing to plot" in result.stderr and not (tmp_path / "p.png").exists()


def test_pictures_of_a_run_on_set5(data_dir: Path, tmp_path: Path) -> None:
    """The paper's Fig. 1 kind of chart, and each method's output with an HR | bicubic | SRCNN | VDSR crop."""
    args = [
        "-d",
        "Set5",
        "--data-dir",
        str(data_dir),
        "-s",
        "2",
        "-m",
        "bicubic",
        "-m",
        "srcnn",
        "-m",
        "vdsr",
        "--plot",
        str(tmp_path / "fig.png"),
        "--save-images",
        str(tmp_path / "out"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "vs bicubic" in result.stdout
    with Image.open(tmp_path / "fig.png") as figure:
        assert figure.format == "PNG" and figure.size[0] > 300
    written = sorted(p.name for p in (tmp_path / "out" / "Set5" / "x2").iterdir())
    assert len(written) == 5 * 4 and "baby_png_vdsr.png" in written and "baby_png_compare.png" in written
    with (
        Image.open(tmp_path / "out" / "Set5" / "x2" / "baby_png_compare.png") as compare,
        Image.open(tmp_path / "out" / "Set5" / "x2" / "baby_png_vdsr.png") as output,
    ):
        assert compare.size == (4 * 64 * 3 + 3 * 4, 64 * 3) and output.mode == "RGB"


def test_a_real_world_degradation_is_recorded_and_never_compared_with_the_paper(data_dir: Path, tmp_path: Path) -> None:
    args = [
        "-d",
        "Set5",
        "--data-dir",
        str(data_dir),
        "-s",
        "2",
        "-m",
        "bicubic",
        "--degradation",
        "jpeg:75",
        "--json",
        str(tmp_path / "r.json"),
        "--markdown",
        str(tmp_path / "r.md"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "r.json").read_text())
    assert document["environment"]["degradation"] == "jpeg:75"
    (cell,) = document["results"]
    assert cell["degradation"] == "jpeg:75" and cell["verified"] and cell["paper_psnr"] is None
    assert cell["psnr"] < 33.66  # below the paper's clean bicubic x2 on Set5: the JPEG costs
    assert "LR: jpeg:75" in result.stdout and "Small images: jpeg:75" in (tmp_path / "r.md").read_text()
    bad = runner.invoke(app, ["-d", "Set5", "--data-dir", str(data_dir), "--degradation", "jpeg:101"])
    assert bad.exit_code == 2 and "--degradation" in bad.stderr and bad.stdout == ""


def test_scales_between_the_integers(tmp_path: Path, tiny_model: dict[str, Path]) -> None:
    """x2.5: HR cropped to a multiple of 5, LR at 2/5 of it, shave 3; a model trained on several scales (VDSR) is
    scored there, a model of one scale (SRCNN x2) is not."""
    from vdsr.bench.protocol import border, crop_multiple, degrade, scorable
    from vdsr.scale import parse_scales

    assert parse_scales(["1.5,2", "2.5", "3.25"]) == [1.5, 2, 2.5, 3.25] and isinstance(parse_scales(["3"])[0], int)
    assert (crop_multiple(2.5), crop_multiple(1.5), crop_multiple(3.25), crop_multiple(4)) == (5, 3, 13, 4)
    assert (border(2.5), border(2), border(1.5)) == (3, 2, 2)
    color = np.random.default_rng(5).random((48, 52, 3)).astype(np.float32)
    degraded = degrade(color, 2.5)
    assert degraded.hr_y.shape == (45, 50) and degraded.lr_y.shape == (18, 20) and degraded.ilr().shape == (45, 50)
    assert scorable((48, 52), 2.5) and not scorable((16, 16), 2.5)
    (tmp_path / "photos").mkdir()
    Image.fromarray((color * 255).astype(np.uint8)).save(tmp_path / "photos" / "a.png")
    args = [
        "-d",
        str(tmp_path / "photos"),
        "-s",
        "2.5",
        "-m",
        "bicubic",
        "-m",
        "vdsr",
        "--weights",
        str(tiny_model["onnx"]),
        "--json",
        str(tmp_path / "r.json"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    cells = {c["method"]: c for c in json.loads((tmp_path / "r.json").read_text())["results"]}
    assert set(cells) == {"bicubic", "vdsr"} and cells["vdsr"]["scale"] == 2.5 and "x2.5" in result.stdout
