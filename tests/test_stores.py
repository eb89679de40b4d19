"""Folders named by URI (vdsr.runtime.places), through file:// on pyarrow.fs: the plain run's plan (one planner), runs
that name the URIs in their failures, whole uploads. The Ray run over URIs is in test_ray.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vdsr.errors import UsageError
from vdsr.runtime.cli import app
from vdsr.runtime.images import LoadedImage, max_file_bytes
from vdsr.runtime.pipeline import run_jobs
from vdsr.runtime.places import Stores, as_uri, is_uri, local, place_of
from vdsr.runtime.planning import FolderReport, Job, claim
from vdsr.runtime.planning import plan as plan_jobs

pytest.importorskip("pyarrow", reason="pyarrow comes with the optional `ray` extra: pip install '.[ray]'")


def plan(source: str, scale: float, output: str | None = None, **options: object) -> list[tuple[str, str]]:
    """The plan as (input, output) names."""
    stores = Stores()
    output_place = None if output is None else place_of(output, stores)
    jobs = plan_jobs(place_of(source, stores), scale, output_place, **options)  # type: ignore[arg-type]
    return [(str(j.source), str(j.target)) for j in jobs]


def tree(folder: Path) -> None:
    rng = np.random.default_rng(1)
    (folder / "sub").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    for name, shape in (
        ("a.png", (9, 7, 3)),
        ("b.jpg", (8, 8, 3)),
        ("sub/c.png", (6, 5)),
        ("d.gif", (5, 5)),
        (".hidden/e.png", (4, 4)),
        (".f.png", (4, 4)),
        ("sub/été #1 100%.png", (5, 6)),
        ("a-c.png", (4, 5)),
    ):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    (folder / "bad.png").write_bytes(b"not a png")
    (folder / "sub" / "up").symlink_to("..")  # a loop: a plain run does not follow links to folders


def test_uris_are_told_from_paths() -> None:
    assert is_uri("s3://bucket/photos") and is_uri("gs://b/x.png") and is_uri("file:///tmp/x")
    assert not is_uri("photos") and not is_uri("/tmp/s3://x") and not is_uri("C:\\photos") and not is_uri(None)
    assert as_uri("s3://bucket/x") == "s3://bucket/x" and as_uri("/tmp/a b").startswith("file:///tmp/a")


@pytest.mark.parametrize("recursive", [False, True])
@pytest.mark.parametrize("fmt", [None, "webp"])
def test_a_store_is_planned_as_a_plain_run_plans_a_folder(tmp_path: Path, recursive: bool, fmt: str | None) -> None:
    tree(tmp_path / "in")
    plain = plan_jobs(local(tmp_path / "in"), 2, local(tmp_path / "out"), recursive=recursive, fmt=fmt)
    source, out = (tmp_path / "in").as_uri(), (tmp_path / "out").as_uri()
    stored = plan(source, 2, out, recursive=recursive, fmt=fmt)  # names with spaces, '#', '%', accents: as they are
    assert stored == [(f"file://{j.source}", f"file://{j.target}") for j in plain] and len(stored) == 5 + 2 * recursive
    assert plan(source + "/", 2.5)[0][1] == f"file://{tmp_path}/in_x2.5/a-c.png"  # the default output: beside it


def test_single_files_and_refusals(tmp_path: Path) -> None:
    tree(tmp_path / "in")
    folder = (tmp_path / "in").as_uri()
    assert plan(f"{folder}/a.png", 3) == [(f"{folder}/a.png", f"{folder}/a_x3.png")]
    assert plan(f"{folder}/d.gif", 2, f"{folder}/out")[0][1] == f"{folder}/out/d.png"  # no GIFs written
    assert plan(f"{folder}/a.png", 2, f"{folder}/big.webp") == [(f"{folder}/a.png", f"{folder}/big.webp")]
    with pytest.raises(UsageError, match="suffix says another format than --format png"):
        plan(f"{folder}/a.png", 2, f"{folder}/big.webp", fmt="png")
    (tmp_path / "file").write_text("a file where a folder would go")
    with pytest.raises(UsageError, match="cannot write"):  # checked before any work, as a plain run checks it
        plan(folder, 2, f"{(tmp_path / 'file').as_uri()}/out")
    for source, output, message in [
        (f"{folder}/missing", None, "no such file or folder"),
        (folder, f"{folder}/sub/out", None),
        (folder, folder, "must not be the input"),
        (f"{folder}/a.png", f"{folder}/a.png", "would replace the input"),
        ("nosuchscheme://x/y", None, "no file system for this scheme"),
    ]:
        if message is None:  # inside the input folder: only refused when the run reads subfolders
            assert plan(source, 2, output, recursive=False)
            with pytest.raises(UsageError, match="must not be the input folder or inside it"):
                plan(source, 2, output, recursive=True)
            continue
        with pytest.raises(UsageError, match=message):
            plan(source, 2, output)


def doubled(group: list[LoadedImage]) -> list[np.ndarray]:
    """A stand-in for the upscaling step: each pixel twice each way, as 8-bit levels."""
    return [
        np.clip(np.rint(np.repeat(np.repeat(loaded.pixels, 2, 0), 2, 1) * 255), 0, 255).astype(np.uint8)
        for loaded in group
    ]


def stored(source: Path, output: Path, stores: Stores) -> list[Job]:
    return plan_jobs(place_of(source.as_uri(), stores), 2, place_of(output.as_uri(), stores))


def test_staged_runs_name_the_uris_and_leave_nothing_partial(tmp_path: Path) -> None:
    tree(tmp_path / "in")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "in" / "big.png")
    (tmp_path / "out" / "blocked.png").mkdir(parents=True)  # its upload cannot replace a folder
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "in" / "blocked.png")
    stores = Stores()
    jobs = stored(tmp_path / "in", tmp_path / "out", stores)
    gone = stored(tmp_path / "in" / "a.png", tmp_path / "out", stores)[0]
    (tmp_path / "in" / "a.png").rename(tmp_path / "in" / "gone.png")  # vanished after the plan
    seen: list[Path | str] = []
    report = run_jobs(
        [*jobs, gone],
        doubled,
        FolderReport(),
        scale=2,
        fail_fast=False,
        max_pixels=1000,
        max_output_pixels=10**6,
        on_image=lambda name, pixels: pixels and seen.append(name),
    )
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["a-c.png", "b.jpg", "blocked.png", "d.png"]  # the folder stays; no temporaries left
    assert sorted(Path(str(w)).name for w in report.written) == ["a-c.png", "b.jpg", "d.png"] and len(seen) == 3
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "b.jpg")).shape, (16, 16, 3))
    causes = {str(f.path).rsplit("/", 1)[1]: f for f in report.failed}
    assert sorted(causes) == ["a.png", "a.png", "bad.png", "big.png", "blocked.png"][1:]
    assert all(str(f.path).startswith(f"file://{tmp_path}/in/") for f in report.failed)
    assert "over the limit of 1000 pixels" in causes["big.png"].cause and causes["a.png"].cause == "file not found"
    assert causes["blocked.png"].cause.startswith("cannot write it") and causes["blocked.png"].output
    # the same plan again: outputs that exist are skipped; an output that is an input, or another's, is refused
    again = FolderReport()
    assert len(claim(jobs, again, skip_existing=True, on_image=lambda path, pixels: None)) == len(jobs) - 3
    assert len(again.skipped) == 3
    clash = FolderReport()
    twisted = [jobs[0], Job(jobs[2].source, jobs[1].source), Job(jobs[1].source, jobs[0].target)]
    assert claim(twisted, clash, skip_existing=False, on_image=lambda path, pixels: None) == [jobs[0]]
    assert "is an input" in str(clash.failed[0]) and "is also" in str(clash.failed[1])


def test_a_large_object_is_refused_before_it_is_read(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    with (tmp_path / "in" / "huge.png").open("wb") as f:  # sparse: past what 100 pixels and their metadata take
        f.write(b"\x89PNG")
        f.truncate(max_file_bytes(100) + 1)
    jobs = stored(tmp_path / "in", tmp_path / "out", Stores())
    report = run_jobs(
        jobs,
        doubled,
        FolderReport(),
        scale=2,
        fail_fast=False,
        max_pixels=100,
        max_output_pixels=10**6,
        on_image=lambda path, pixels: None,
    )
    assert (
        f"{max_file_bytes(100) + 1} bytes is more than an image of at most 100 pixels takes; refused as padded"
        in report.failed[0].cause
    )
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_plain_run_refuses_uris_with_a_pointer_to_ray(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["s3://bucket/photos", "-s", "2"])
    assert result.exit_code == 2 and "URIs are read and written on Ray runs; add --ray local" in result.output
    result = CliRunner().invoke(app, [str(tmp_path), "-s", "2", "-o", "gs://bucket/out"])
    assert result.exit_code == 2 and "gs://bucket/out: URIs" in result.output


def test_a_store_output_is_probed_and_a_root_needs_an_output(tmp_path: Path) -> None:
    """Issue 37 for URIs: a broken link as a file:// output is found before any work, as a plain run finds it; the
    root of a file system has no name to put an output beside it."""
    tree(tmp_path / "in")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UsageError, match=r"link is not a writable folder \(a broken link\)"):
        plan((tmp_path / "in").as_uri(), 2, (tmp_path / "link").as_uri())
    with pytest.raises(UsageError, match="give --output"):
        plan("file:///", 2)
