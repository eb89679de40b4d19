"""vdsr-run --ray on a local Ray cluster of 2 CPUs: the same files, names, pixels, failures and exit code as a plain
run, --skip-existing after an interrupted run, and the Python entry point for a Ray Dataset."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """One local cluster of 2 CPUs for the module; `--ray local` joins it instead of starting one per run."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


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


def test_a_ray_run_writes_what_a_plain_run_writes(cluster: None, tmp_path: Path) -> None:
    mixed_folder(tmp_path / "in")
    plain = CliRunner().invoke(app, [str(tmp_path / "in"), "-s", "2", "-o", str(tmp_path / "plain")])
    on_ray = CliRunner().invoke(app, [str(tmp_path / "in"), "-s", "2", "-o", str(tmp_path / "ray"), "--ray", "local"])
    assert plain.exit_code == on_ray.exit_code == EXIT_FAILED, on_ray.output
    assert "Ray Data at local: 2 actors, 1 CPU each, a GPU each if the cluster has GPUs" in on_ray.output
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


def test_a_ray_run_reads_and_writes_uris(cluster: None, tmp_path: Path) -> None:
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


def test_ray_usage_errors_come_before_any_work(cluster: None, tmp_path: Path) -> None:
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


def test_a_ray_dataset_of_images_maps_to_upscaled_images(cluster: None) -> None:
    from vdsr.runtime.ray_data import upscale_dataset

    rng = np.random.default_rng(6)
    images = [rng.integers(0, 256, (9 + i, 11, 3), dtype=np.uint8) for i in range(3)]
    dataset = ray.data.from_items([{"image": image, "name": str(i)} for i, image in enumerate(images)])
    rows = sorted(upscale_dataset(dataset, 2, actors=1).take_all(), key=lambda row: row["name"])
    with Upscaler() as upscaler:
        for row, image in zip(rows, images, strict=True):
            assert np.array_equal(row["image"], upscaler.upscale(image, 2))
