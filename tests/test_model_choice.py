"""`model="auto"`, the default: each input on the shipped model measured best for it (vdsr.runtime.model_choice):
vdsr_real for JPEG sources, videos and scales under x2, vdsr for lossless images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vdsr import Upscaler


def photo(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((35, 30), Image.Resampling.BICUBIC)  # smooth, with edges


@pytest.fixture(scope="module")
def upscalers() -> dict[str, Upscaler]:
    lines: list[str] = []
    made = {
        "auto": Upscaler(precision="fp32", log=lines.append),
        "vdsr": Upscaler("vdsr", precision="fp32"),
        "vdsr_real": Upscaler("vdsr_real", precision="fp32"),
    }
    assert any(line.startswith("model auto: vdsr for lossless images") for line in lines), lines
    return made


def test_a_folder_run_upscales_each_file_with_its_model(tmp_path: Path, upscalers: dict[str, Upscaler]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    photo(0).save(folder / "a.png")
    photo(1).save(folder / "b.jpg", quality=80)
    photo(2).save(folder / "c.webp", quality=80)  # lossy WebP
    photo(3).save(folder / "d.webp", lossless=True)
    for name, upscaler in upscalers.items():
        report = upscaler.upscale_folder(folder, 2, tmp_path / name)
        assert len(report.written) == 4 and not report.failed

    def pixels(model: str, name: str) -> np.ndarray:
        return np.asarray(Image.open(tmp_path / model / name))

    expected = {"a.png": "vdsr", "b.jpg": "vdsr_real", "c.webp": "vdsr_real", "d.webp": "vdsr"}
    for name, model in expected.items():
        other = "vdsr" if model == "vdsr_real" else "vdsr_real"
        assert np.array_equal(pixels("auto", name), pixels(model, name)), name
        assert not np.array_equal(pixels(other, name), pixels(model, name)), name  # control: the models differ


def test_scales_under_x2_go_to_the_model_trained_for_them(upscalers: dict[str, Upscaler]) -> None:
    image = np.asarray(photo(4))
    auto = upscalers["auto"].upscale(image, 1.5)
    assert np.array_equal(auto, upscalers["vdsr_real"].upscale(image, 1.5))
    assert np.array_equal(upscalers["auto"].upscale(image, 2), upscalers["vdsr"].upscale(image, 2))


def test_the_api_reads_a_pil_images_format(tmp_path: Path, upscalers: dict[str, Upscaler]) -> None:
    photo(5).save(tmp_path / "p.jpg", quality=80)
    jpeg = Image.open(tmp_path / "p.jpg")
    array = np.asarray(jpeg)
    auto = upscalers["auto"]
    assert np.array_equal(np.asarray(auto.upscale(jpeg, 2)), np.asarray(upscalers["vdsr_real"].upscale(jpeg, 2)))
    mixed = auto.upscale([array, Image.open(tmp_path / "p.jpg")], 2)  # a list: each item by its model, in order
    assert np.array_equal(mixed[0], upscalers["vdsr"].upscale(array, 2))
    assert np.array_equal(np.asarray(mixed[1]), np.asarray(upscalers["vdsr_real"].upscale(jpeg, 2)))
