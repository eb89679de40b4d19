"""Folders named by URI (vdsr.runtime.stores), through file:// on pyarrow.fs: the plain run's plan, staged runs that
name the URIs in their failures, whole uploads. The Ray run over URIs is in test_ray.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vdsr.errors import UsageError
from vdsr.runtime.cli import app
from vdsr.runtime.folders import FolderReport, plan_jobs
from vdsr.runtime.images import LoadedImage
from vdsr.runtime.stores import as_uri, claim_store_outputs, is_uri, plan_store_jobs, run_store_jobs

pytest.importorskip("pyarrow", reason="pyarrow comes with the optional `ray` extra: pip install '.[ray]'")


def tree(folder: Path) -> None:
    rng = np.random.default_rng(1)
    (folder / "sub").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    for name, shape in (("a.png", (9, 7, 3)), ("b.jpg", (8, 8, 3)), ("sub/c.png", (6, 5)), ("d.gif", (5, 5)),
                        (".hidden/e.png", (4, 4)), (".f.png", (4, 4))):  # fmt: skip
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    (folder / "bad.png").write_bytes(b"not a png")


def test_uris_are_told_from_paths() -> None:
    assert is_uri("s3://bucket/photos") and is_uri("gs://b/x.png") and is_uri("file:///tmp/x")
    assert not is_uri("photos") and not is_uri("/tmp/s3://x") and not is_uri("C:\\photos") and not is_uri(None)
    assert as_uri("s3://bucket/x") == "s3://bucket/x" and as_uri("/tmp/a b").startswith("file:///tmp/a")


@pytest.mark.parametrize("recursive", [False, True])
@pytest.mark.parametrize("fmt", [None, "webp"])
def test_a_store_is_planned_as_a_plain_run_plans_a_folder(tmp_path: Path, recursive: bool, fmt: str | None) -> None:
    tree(tmp_path / "in")
    plain = plan_jobs(tmp_path / "in", 2, tmp_path / "out", recursive=recursive, fmt=fmt)
    source, out = (tmp_path / "in").as_uri(), (tmp_path / "out").as_uri()
    stored = plan_store_jobs(source, 2, out, recursive=recursive, fmt=fmt)
    assert stored == [(j.source.as_uri(), j.target.as_uri()) for j in plain] and len(stored) == 4 + recursive
    assert plan_store_jobs(source + "/", 2.5)[0][1] == f"{source}_x2.5/a.png"  # the default output: beside it


def test_single_files_and_refusals(tmp_path: Path) -> None:
    tree(tmp_path / "in")
    folder = (tmp_path / "in").as_uri()
    assert plan_store_jobs(f"{folder}/a.png", 3) == [(f"{folder}/a.png", f"{folder}/a_x3.png")]
    assert plan_store_jobs(f"{folder}/d.gif", 2, f"{folder}/out")[0][1] == f"{folder}/out/d.png"  # no GIFs written
    assert plan_store_jobs(f"{folder}/a.png", 2, f"{folder}/big.webp") == [(f"{folder}/a.png", f"{folder}/big.webp")]
    for source, output, message in [(f"{folder}/missing", None, "no such file or folder"),
                                    (folder, f"{folder}/sub/out", None), (folder, folder, "must not be the input"),
                                    (f"{folder}/a.png", f"{folder}/a.png", "would replace the input"),
                                    ("nosuchscheme://x/y", None, "no file system for this scheme")]:  # fmt: skip
        if message is None:  # inside the input folder: only refused when the run reads subfolders
            assert plan_store_jobs(source, 2, output, recursive=False)
            with pytest.raises(UsageError, match="must not be the input folder or inside it"):
                plan_store_jobs(source, 2, output, recursive=True)
            continue
        with pytest.raises(UsageError, match=message):
            plan_store_jobs(source, 2, output)


def doubled(loaded: LoadedImage) -> np.ndarray:
    """A stand-in for the network: each pixel twice each way, as 8-bit levels."""
    return np.clip(np.rint(np.repeat(np.repeat(loaded.pixels, 2, 0), 2, 1) * 255), 0, 255).astype(np.uint8)


def test_staged_runs_name_the_uris_and_leave_nothing_partial(tmp_path: Path) -> None:
    tree(tmp_path / "in")
    big = np.zeros((40, 40, 3), np.uint8)
    Image.fromarray(big).save(tmp_path / "in" / "big.png")
    jobs = plan_store_jobs((tmp_path / "in").as_uri(), 2, (tmp_path / "out").as_uri())
    jobs.append(((tmp_path / "in" / "gone.png").as_uri(), (tmp_path / "out" / "gone.png").as_uri()))
    seen: list[str] = []
    report = run_store_jobs(jobs, doubled, scale=2, max_pixels=1000, max_output_pixels=10**6,
                            on_image=lambda uri, pixels: seen.append(uri))  # fmt: skip
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["a.png", "b.jpg", "d.png"] == sorted(Path(str(w)).name for w in report.written)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "a.png")),
                          doubled(LoadedImage(Path("a"), np.asarray(Image.open(tmp_path / "in" / "a.png")) / 255.0,
                                              8, False)))  # fmt: skip
    causes = {str(f.path).rsplit("/", 1)[1]: f.cause for f in report.failed}
    assert set(causes) == {"bad.png", "big.png", "gone.png"} and all(str(f.path).startswith("file://")
                                                                     for f in report.failed)  # fmt: skip
    assert "over the limit of 1000 pixels" in causes["big.png"] and "cannot read it" in causes["gone.png"]
    assert "vdsr-store-" not in str(report) and len(seen) == 3  # every line names the URIs, not the staging folder
    # the same plan again: outputs that exist are skipped; an output that is an input is refused
    again = FolderReport()
    assert len(claim_store_outputs(jobs, again, skip_existing=True)) == len(jobs) - 3 and len(again.skipped) == 3
    clash = FolderReport()
    todo = claim_store_outputs(
        [jobs[0], (jobs[2][0], jobs[1][0]), (jobs[1][0], jobs[0][1])], clash, skip_existing=False
    )
    assert todo == [jobs[0]] and "is an input" in str(clash.failed[0]) and "is also" in str(clash.failed[1])


def test_a_large_object_is_refused_before_it_is_read(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "huge.png").write_bytes(b"\x89PNG" + bytes(20_000))
    jobs = plan_store_jobs((tmp_path / "in").as_uri(), 2, (tmp_path / "out").as_uri())
    report = run_store_jobs(jobs, doubled, scale=2, max_pixels=100, max_output_pixels=10**6)
    assert "bytes is more than an image of the allowed size holds" in report.failed[0].cause
    assert not (tmp_path / "out").exists()


def test_a_plain_run_refuses_uris_with_a_pointer_to_ray(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["s3://bucket/photos", "-s", "2"])
    assert result.exit_code == 2 and "URIs are read and written on Ray runs; add --ray local" in result.output
    result = CliRunner().invoke(app, [str(tmp_path), "-s", "2", "-o", "gs://bucket/out"])
    assert result.exit_code == 2 and "gs://bucket/out: URIs" in result.output
