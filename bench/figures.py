"""Pictures of a benchmark run, as people in this field read results: PSNR against seconds per image (the paper's
Fig. 1 kind of chart, `plot`), and each method's output with a side-by-side crop of the most detailed region of each
image (HR | bicubic | SRCNN | VDSR, like the paper's figures, `save_outputs`).

Methods work on luminance; their outputs are shown in colour the way the runtime makes colour: their Y with the
chroma of the bicubic upscale (BT.601). matplotlib is only needed for the chart (the `plot` extra).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from vdsr.bench.harness import CellResult, Outputs
from vdsr.bench.report import shown_name
from vdsr.errors import UsageError
from vdsr.files import atomic_write_bytes
from vdsr.runtime.color import rgb_to_ycbcr, ycbcr_to_rgb
from vdsr.runtime.images import save_image
from vdsr.runtime.resize import imresize

CROP = 64  # HR pixels a side of the comparison crop
ZOOM = 3  # each crop pixel drawn as ZOOM x ZOOM
ORDER = ("HR", "bicubic", "srcnn", "vdsr")
_MARKERS: dict[float, str] = {2: "o", 3: "s", 4: "^"}


def require_matplotlib() -> None:
    """UsageError now, before a long run, when the chart cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise UsageError("--plot needs matplotlib: pip install 'vdsr[plot]'") from error


def plot(cells: Sequence[CellResult], path: Path) -> None:
    """PSNR (dB) against seconds per image, log scale: one panel per data set, one point per method and scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(shown_name(c) for c in cells))
    figure, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.6), squeeze=False)
    colours = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(c.method for c in cells))}
    for ax, name in zip(axes[0], datasets, strict=True):
        for cell in (c for c in cells if shown_name(c) == name):
            ax.scatter(
                cell.seconds_per_image,
                cell.psnr,
                color=colours[cell.method],
                marker=_MARKERS.get(cell.scale, "D"),
                s=40,
            )
            ax.annotate(
                f"{cell.method} x{cell.scale}",
                (cell.seconds_per_image, cell.psnr),
                fontsize=7,
                xytext=(4, 2),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        ax.set_xlabel("seconds per image")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def in_colour(hr: NDArray[np.floating], y: NDArray[np.floating], scale: float) -> NDArray[np.floating]:
    """RGB in [0, 1]: a method's `y` (the protocol's Y: BT.601 on 0..1, or the gray level) with the chroma of the
    bicubic upscale of the HR's reduction."""
    if hr.shape[-1] == 1:
        return np.repeat(np.clip(y, 0, 1)[..., None], 3, axis=-1)
    ycc = rgb_to_ycbcr(np.clip(imresize(imresize(hr, 1 / scale), scale), 0, 1))
    ycc[..., 0] = y
    return np.clip(ycbcr_to_rgb(ycc), 0, 1)


def detailed_region(hr: NDArray[np.floating], size: int) -> tuple[int, int]:
    """Top-left corner of the `size` x `size` window with the most gradient energy (summed-area table)."""
    gray = hr.mean(axis=-1)
    energy = np.zeros_like(gray)
    energy[1:, 1:] = np.diff(gray, axis=0)[:, 1:] ** 2 + np.diff(gray, axis=1)[1:] ** 2
    table = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = gray.shape
    size_y, size_x = min(size, h), min(size, w)
    sums = table[size_y:, size_x:] - table[:-size_y, size_x:] - table[size_y:, :-size_x] + table[:-size_y, :-size_x]
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(top), int(left)


def comparison(outputs: Outputs) -> NDArray[np.uint8]:
    """HR | bicubic | SRCNN | VDSR (those present) crops of the most detailed region, zoomed, labelled."""
    hr = outputs.hr if outputs.hr.shape[-1] in (1, 3) else outputs.hr[..., :3]
    panels = {"HR": np.repeat(hr, 3, axis=-1) if hr.shape[-1] == 1 else hr}
    for name in ORDER[1:]:
        if name in outputs.methods:
            panels[name] = in_colour(hr, outputs.methods[name], outputs.scale)
    top, left = detailed_region(panels["HR"], CROP)
    crops = []
    for name, image in panels.items():
        crop = image[top : top + CROP, left : left + CROP]
        tile = Image.fromarray(np.rint(crop * 255).astype(np.uint8)).resize(
            (crop.shape[1] * ZOOM, crop.shape[0] * ZOOM), Image.Resampling.NEAREST
        )
        ImageDraw.Draw(tile).text((4, 4), name if name == "HR" else f"{name} x{outputs.scale}", fill=(255, 255, 0))
        crops.append(np.asarray(tile))
    gap = np.full((crops[0].shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([part for crop in crops for part in (crop, gap)][:-1], axis=1)


def save_outputs(outputs: Outputs, folder: Path) -> None:
    """<folder>/<dataset>/x<scale>/<image>_<ext>_<method>.png for each method (colour), and
    <image>_<ext>_compare.png (the extension keeps photo.jpg and photo.png apart)."""
    target = folder / outputs.dataset / f"x{outputs.scale}"
    stem = f"{outputs.image.stem}_{outputs.image.suffix.lstrip('.').lower()}"
    hr = outputs.hr if outputs.hr.shape[-1] in (1, 3) else outputs.hr[..., :3]
    for method, y in outputs.methods.items():
        pixels = in_colour(hr, y, outputs.scale)
        save_image(target / f"{stem}_{method}.png", np.rint(pixels * 255).astype(np.uint8))
    save_image(target / f"{stem}_compare.png", comparison(outputs))
