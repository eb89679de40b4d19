"""`model="auto"` (the default of vdsr-run and Upscaler): for each input, the shipped model measured best for it.

Measured on scikit-image's bundled photos (which no model was trained or tuned on), halved and saved as PNG, JPEG q90
and JPEG q75, upscaled x2 on the default path (bench/scripts/model_choice.py, bench/results/model_choice/): on every
JPEG `vdsr_real` beats `vdsr` (+0.15 to +1.30 dB), on every PNG `vdsr` is better or within 0.03 dB. So: compressed
inputs (JPEG, lossy WebP, video frames) and scales under `vdsr`'s trained x2 (`vdsr_real` is trained from x1.5) go
to `vdsr_real`; lossless images at x2 and up to `vdsr`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

from vdsr.model import Model

Item = TypeVar("Item")
Runner = TypeVar("Runner", bound=Hashable)

AUTO = "auto"
CLEAN_MODEL = "vdsr"  # the paper's model: lossless sources
LOSSY_MODEL = "vdsr_real"  # trained on compressed, noisy and blurred inputs too, from x1.5
LOSSY_FORMATS = ("JPEG", "MPO", "WEBP")  # Pillow's format names of images that may carry compression artefacts


def is_auto(model: object) -> bool:
    return model is None or model == AUTO


def wants_lossy_model(*, lossy: bool, scale: float, clean_scales: tuple[float, ...] | list[float]) -> bool:
    """Whether an input goes to LOSSY_MODEL: a compressed source, or a scale under the clean model's trained ones."""
    return lossy or (bool(clean_scales) and scale < min(clean_scales))


def lossy_precision(precision: str, log: Callable[[str], None]) -> str:
    """The precision of LOSSY_MODEL's upscaler: the one asked, or auto where it has no such graph (int8: `vdsr_real`
    has none, so `--precision int8` with model auto is int8 for `vdsr` only), said in `log`."""
    if precision != "int8" or "int8" in Model.load(LOSSY_MODEL).graphs:
        return precision
    log(f"{LOSSY_MODEL} has no int8 graph: its precision is chosen as for auto")
    return "auto"


def explain() -> str:
    """The log line of an auto run."""
    return (
        f"model auto: {CLEAN_MODEL} for lossless images at x2 and up; {LOSSY_MODEL} for JPEG and lossy WebP images, "
        "videos and scales under x2 (measured best for each: see vdsr.runtime.model_choice)"
    )


def by_model(items: list[Item], chosen: list[Runner], run: Callable[[Runner, list[Item]], Iterable[Any]]) -> list[Any]:
    """`run(runner, its items)` for each runner chosen (the items of one model together, so their tiles still share
    the backend's batches); the results in the items' order."""
    results: list[Any] = [None] * len(items)
    for runner in dict.fromkeys(chosen):
        mine = [i for i, r in enumerate(chosen) if r is runner]
        for i, result in zip(mine, run(runner, [items[i] for i in mine]), strict=True):
            results[i] = result
    return results
