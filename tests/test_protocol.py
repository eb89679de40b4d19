"""The paper's Bicubic column involves no learning: reproducing it proves resize, colour, crop and metrics together."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vdsr.bench.datasets import resolve_dataset
from vdsr.bench.harness import Method, method_runner, run_bench
from vdsr.bench.paper import paper_value
from vdsr.bench.protocol import ground_truth_y, round_half_away
from vdsr.runtime.images import load_image

PSNR_TOLERANCE = 0.02  # dB; the paper rounds to 0.01
SSIM_TOLERANCE = 0.0006


def test_bicubic_reproduces_paper_table3(data_dir: Path) -> None:
    datasets = [resolve_dataset(name, data_dir) for name in ("Set5", "Set14", "B100")]
    run = run_bench(datasets, [2, 3, 4], [method_runner(Method.bicubic)])
    assert not run.failures and len(run.cells) == 9
    for cell in run.cells:
        paper = paper_value(cell.dataset, cell.scale, "bicubic")
        assert paper is not None
        assert abs(cell.psnr - paper[0]) <= PSNR_TOLERANCE, cell
        assert abs(cell.ssim - paper[1]) <= SSIM_TOLERANCE, cell


def test_gray_image_is_its_own_luminance(data_dir: Path) -> None:
    bridge = load_image(data_dir / "Set14" / "bridge.png")
    assert bridge.color.shape[-1] == 1
    gt = ground_truth_y(bridge.color, 3)
    stored = np.asarray(Image.open(data_dir / "Set14" / "bridge.png"))  # the file's own 8-bit values
    assert gt.shape == (stored.shape[0] // 3 * 3, stored.shape[1] // 3 * 3)
    assert np.array_equal(gt, stored[: gt.shape[0], : gt.shape[1]])


def test_rgb_gray_goes_through_bt601_rounded(data_dir: Path) -> None:
    man = load_image(data_dir / "Set14" / "man.png")
    assert man.color.shape[-1] == 3 and man.is_gray
    gt = ground_truth_y(man.color, 3)
    levels = np.asarray(Image.open(data_dir / "Set14" / "man.png"))[: gt.shape[0], : gt.shape[1], 0].astype(np.float64)
    assert np.array_equal(gt, np.floor(16 + levels * 219 / 255 + 0.5))  # studio range: 0..255 -> 16..235
    assert gt.shape[0] % 3 == 0 and gt.shape[1] % 3 == 0


def test_rounding_is_half_away_from_zero() -> None:
    assert list(round_half_away(np.array([0.5, 1.5, 2.5, -0.5, 2.4999]))) == [1, 2, 3, -1, 2]


@pytest.mark.parametrize(("scale", "smallest"), [(2, 16), (3, 18), (4, 20)])
def test_smallest_scorable_side(tmp_path: Path, scale: int, smallest: int) -> None:
    # after modcrop to a multiple of the scale and shaving the scale from both sides, 11 px must remain for SSIM
    assert (smallest // scale * scale) - 2 * scale >= 11 > ((smallest - 1) // scale * scale) - 2 * scale
    rng = np.random.default_rng(scale)
    for side in (smallest - 1, smallest):
        Image.fromarray(rng.integers(0, 256, (40, side, 3), dtype=np.uint8)).save(tmp_path / f"w{side}.png")
    run = run_bench([resolve_dataset(str(tmp_path), None)], [scale], [method_runner(Method.bicubic)])
    assert [f.image for f in run.failures] == [f"w{smallest - 1}.png"] and "too small" in run.failures[0].error
    assert [r.image for r in run.images] == [f"w{smallest}.png"]


def test_degradations_parse_and_the_default_is_the_papers() -> None:
    from vdsr.bench.protocol import BICUBIC, Degradation, parse_degradation
    from vdsr.errors import UsageError

    assert parse_degradation("bicubic") == BICUBIC and str(parse_degradation("jpeg:75")) == "jpeg:75"
    assert parse_degradation("noise:2.5") == Degradation("noise", 2.5)
    for bad in ("jpeg", "jpeg:0", "jpeg:100", "jpeg:7.5", "noise:-1", "noise:x", "blur:2", "bicubic:1"):
        with pytest.raises(UsageError, match="--degradation"):
            parse_degradation(bad)


def test_jpeg_and_noise_small_images_are_real_world_and_repeatable() -> None:
    """The LR made in RGB, rounded to 8 bits, then JPEG-compressed or noised, then its Y: deterministic by seed."""
    from vdsr.bench.protocol import BICUBIC, Degradation, degrade, low_resolution

    rng = np.random.default_rng(4)
    color = (np.cumsum(rng.integers(-6, 7, (37, 41, 3)), axis=1) % 256 / 255).astype(np.float32)
    paper = degrade(color, 3)
    assert np.array_equal(paper.lr_y, low_resolution(ground_truth_y(color, 3), 3))  # unchanged by default
    assert degrade(color, 3, BICUBIC).lr_y.shape == paper.lr_y.shape == (12, 13)
    jpeg = degrade(color, 3, Degradation("jpeg", 30))
    assert jpeg.lr_y.shape == (12, 13) and np.array_equal(jpeg.hr_y, paper.hr_y)
    assert np.array_equal(jpeg.lr_y, degrade(color, 3, Degradation("jpeg", 30)).lr_y)
    assert 0.5 / 255 < float(np.abs(jpeg.lr_y - paper.lr_y).mean()) < 20 / 255  # compressed, but the same picture
    assert np.array_equal(jpeg.lr_y * 255, np.round(jpeg.lr_y * 255))  # 8-bit levels, as a decoded JPEG's Y
    noisy = degrade(color, 3, Degradation("noise", 5), seed=1)
    assert np.array_equal(noisy.lr_y, degrade(color, 3, Degradation("noise", 5), seed=1).lr_y)
    assert not np.array_equal(noisy.lr_y, degrade(color, 3, Degradation("noise", 5), seed=2).lr_y)
    clean = degrade(color, 3, Degradation("noise", 0))  # no noise: the 8-bit RGB LR's Y, within rounding of the paper's
    assert float(np.abs(clean.lr_y - paper.lr_y).max()) < 2 / 255
    gray = degrade(color[..., :1], 2, Degradation("jpeg", 50))
    assert gray.lr_y.shape == (18, 20)
