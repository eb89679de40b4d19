"""vdsr-run --ray on a local Ray cluster of 2 CPUs: the same files, names, pixels, failures and exit code as a plain
run, --skip-existing after an interrupted run, and the Python entry point for a Ray Dataset."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vdsr import Upscaler
from vdsr.errors import EXIT_FAILED
from vdsr.runtime.cli import app

ray = pytest.importorskip("ray", reason="Ray is the optional `ray` extra: pip install '.[ray]'")


STALE_ADDRESS = "127.0.0.1:9"  # the discard port: no Ray cluster answers there


@pytest.fixture(scope="module")
def stale_cluster() -> Iterator[Path]:
    """What a machine where another Ray cluster once ran holds: a `ray_current_cluster` file in Ray's default
    temporary folder naming a cluster that is gone (and RAY_ADDRESS naming it too). `ray.init()` without an address
    joins that cluster and fails. The default folder is made private ($RAY_TMPDIR), so no other Ray on this machine
    sees the stale file; it goes with the folder at the end."""
    with tempfile.TemporaryDirectory(prefix="ray-default-") as root, pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_TMPDIR", root)
        patch.setenv("RAY_ADDRESS", STALE_ADDRESS)
        stale = Path(root) / "ray" / "ray_current_cluster"  # where plain ray.init() looks, under $RAY_TMPDIR
        stale.parent.mkdir()
        stale.write_text(STALE_ADDRESS)
        yield stale


@pytest.fixture(scope="module")
def cluster(stale_cluster: Path) -> Iterator[Path]:
    """One new local cluster of 2 CPUs for the module, in a private temporary folder: `address="local"` starts one
    and never joins a cluster named by RAY_ADDRESS or the current-cluster file. `--ray local` joins this one instead
    of starting one per run. Yields the cluster's temporary folder (a short path: Ray's socket names must fit)."""
    folder = Path(tempfile.mkdtemp(prefix="ray-"))
    ray.init(address="local", _temp_dir=str(folder), num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield folder
    ray.shutdown()
    shutil.rmtree(folder, ignore_errors=True)  # Ray's processes may still be closing their logs


def test_the_tests_start_their_own_cluster_whatever_ray_finds_on_the_machine(
    cluster: Path, stale_cluster: Path
) -> None:
    """The suite failed on a machine where any other Ray cluster ever ran (a stale `ray_current_cluster`)."""
    assert stale_cluster.read_text() == STALE_ADDRESS  # still there, and ignored
    assert (cluster / "session_latest").exists()  # this cluster's session is in the private folder
    assert ray.cluster_resources()["CPU"] == 2


def mixed_folder(folder: Path) -> None:
    rng = np.random.default_rng(5)
    folder.mkdir()
    Image.fromarray(rng.integers(0, 256, (23, 17, 3), dtype=np.uint8)).save(folder / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)).save(folder / "gray.jpg", quality=90)
    Image.fromarray(rng.integers(0, 256, (16, 18, 4), dtype=np.uint8)).save(folder / "alpha.png")
    Image.fromarray(rng.integers(0, 65536, (14, 15), dtype=np.uint16)).save(folder / "deep.png")
    Image.fromarray(rng.integers(0, 256, (12, 13, 3), dtype=np.uint8)).save(folder / "photo.bmp")
    (folder / "bad.png").write_bytes(b"not a png at all")
    whole = (folder / "rgb.png").read_bytes()
    (folder / "cut.png").write_bytes(whole[: len(whole) // 2])


def outputs(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.iterdir())}


def failures(output: str) -> list[str]:
    return sorted(line for line in output.splitlines() if line.startswith("failed: "))


def test_a_ray_run_writes_what_a_plain_run_writes(cluster: Path, tmp_path: Path) -> None:
    mixed_folder(tmp_path / "in")
    plain = CliRunner().invoke(app, [str(tmp_path / "in"), "-s", "2", "-o", str(tmp_path / "plain")])
    on_ray = CliRunner().invoke(app, [str(tmp_path / "in"), "-s", "2", "-o", str(tmp_path / "ray"), "--ray", "local"])
    assert plain.exit_code == on_ray.exit_code == EXIT_FAILED, on_ray.output
    assert "Ray at local: 2 actors, 1 CPU each, a GPU each if the cluster has GPUs" in on_ray.output
    assert failures(on_ray.output) == failures(plain.output) and len(failures(plain.output)) == 2
    assert "5 written, 0 skipped (existing), 2 failed" in on_ray.output
    expected, got = outputs(tmp_path / "plain"), outputs(tmp_path / "ray")
    assert sorted(got) == sorted(expected) == ["alpha.png", "deep.png", "gray.jpg", "photo.bmp", "rgb.png"]
    for name in expected:  # nothing partial, nothing else: the same pixels, types and sizes
        assert got[name].dtype == expected[name].dtype and np.array_equal(got[name], expected[name]), name

    for name in ("rgb.png", "deep.png"):  # an interrupted run: two results missing, a killed write's temporary left
        (tmp_path / "ray" / name).unlink()
    (tmp_path / "ray" / ".rgb.png.999999.abc123.tmp").write_bytes(b"half")
    resumed = CliRunner().invoke(
        app, [str(tmp_path / "in"), "-s", "2", "-o", str(tmp_path / "ray"), "--ray", "local", "--skip-existing"]
    )
    assert resumed.exit_code == EXIT_FAILED and "2 written, 3 skipped (existing), 2 failed" in resumed.output
    got = outputs(tmp_path / "ray")
    assert sorted(got) == sorted(expected) and all(np.array_equal(got[n], expected[n]) for n in expected)


def test_a_ray_run_reads_and_writes_uris(cluster: Path, tmp_path: Path) -> None:
    """Input and output as URIs (file:// here; s3://, gs:// the same way through pyarrow.fs): a plain run's files."""
    mixed_folder(tmp_path / "in")
    plain = CliRunner().invoke(app, [str(tmp_path / "in"), "-s", "2", "-o", str(tmp_path / "plain")])
    source, target = (tmp_path / "in").as_uri(), (tmp_path / "stored").as_uri()
    on_ray = CliRunner().invoke(app, [source, "-s", "2", "-o", target, "--ray", "local"])
    assert on_ray.exit_code == EXIT_FAILED and "5 written, 0 skipped (existing), 2 failed" in on_ray.output
    assert failures(on_ray.output) == [f"failed: {source}/{line.split('/')[-1]}" for line in failures(plain.output)]
    expected, got = outputs(tmp_path / "plain"), outputs(tmp_path / "stored")
    assert sorted(got) == sorted(expected) and all(np.array_equal(got[n], expected[n]) for n in expected)
    (tmp_path / "stored" / "rgb.png").unlink()
    resumed = CliRunner().invoke(app, [source, "-s", "2", "-o", target, "--ray", "local", "--skip-existing"])
    assert resumed.exit_code == EXIT_FAILED and "1 written, 4 skipped (existing), 2 failed" in resumed.output
    assert np.array_equal(outputs(tmp_path / "stored")["rgb.png"], expected["rgb.png"])


def test_ray_usage_errors_come_before_any_work(cluster: Path, tmp_path: Path) -> None:
    mixed_folder(tmp_path / "in")
    fail_fast = CliRunner().invoke(app, [str(tmp_path / "in"), "-s", "2", "--ray", "local", "--fail-fast"])
    assert fail_fast.exit_code == 2 and "--fail-fast is for a plain run" in fail_fast.output
    missing = CliRunner().invoke(app, [str(tmp_path / "in"), "-s", "2", "--ray", "local", "--model", "x.onnx"])
    assert missing.exit_code == 2 and "x.onnx" in missing.output
    # a local cluster's actors open what the driver can open: checked before any work
    wrong = CliRunner().invoke(
        app, [str(tmp_path / "in"), "-s", "2", "--ray", "local", "--backend", "torch-cuda", "--device", "cpu"]
    )
    assert wrong.exit_code == 2 and "does not run on device cpu" in wrong.output
    too_wide = CliRunner().invoke(app, [str(tmp_path / "in"), "-s", "2", "--ray", "local", "--ray-actors", "3"])
    assert too_wide.exit_code == 2 and "3 actors x 1 CPU is more than the cluster's 2 CPU" in too_wide.output
    gpus = CliRunner().invoke(app, [str(tmp_path / "in"), "-s", "2", "--ray", "local", "--ray-gpus", "1"])
    assert gpus.exit_code == 2 and "more than the cluster's 0 GPU" in gpus.output  # instead of waiting for ever
    assert not (tmp_path / "in_x2").exists()


def test_a_ray_dataset_of_images_maps_to_upscaled_images(cluster: Path) -> None:
    from vdsr.runtime.ray_data import upscale_dataset

    rng = np.random.default_rng(6)
    images = [rng.integers(0, 256, (9 + i, 11, 3), dtype=np.uint8) for i in range(3)]
    dataset = ray.data.from_items([{"image": image, "name": str(i)} for i, image in enumerate(images)])
    rows = sorted(upscale_dataset(dataset, 2, actors=1).take_all(), key=lambda row: row["name"])
    with Upscaler() as upscaler:
        for row, image in zip(rows, images, strict=True):
            assert np.array_equal(row["image"], upscaler.upscale(image, 2))


def test_videos_run_on_ray_as_jobs(cluster: Path, tmp_path: Path) -> None:
    """A video is one job, as an image is: the same frames and timestamps as a plain run writes, and the same warning
    for a stream left out."""
    from test_video import clip, frames_of
    from test_video_choice import streams

    (tmp_path / "in").mkdir()
    clip(tmp_path / "in" / "clip.mp4", frames=3)
    streams(tmp_path / "in" / "cover.mp4", muxer="mp4", still_first=False, second=False, cover=True)
    args = [str(tmp_path / "in"), "-s", "2", "--model", "srcnn"]
    plain = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "plain")])
    on_ray = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "ray"), "--ray", "local"])
    assert plain.exit_code == on_ray.exit_code == 0, on_ray.output
    warning = f"warning: {tmp_path / 'in' / 'cover.mp4'}: its cover picture 1 not copied"
    assert warning in plain.output and warning in on_ray.output, on_ray.output
    ray_frames, plain_frames = frames_of(tmp_path / "ray" / "clip.mp4"), frames_of(tmp_path / "plain" / "clip.mp4")
    assert [f.time for f in ray_frames] == [f.time for f in plain_frames] and len(ray_frames) == 3
    assert all(np.array_equal(a.to_ndarray(), b.to_ndarray()) for a, b in zip(ray_frames, plain_frames, strict=True))
