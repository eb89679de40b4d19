"""Training patches: HR luminance and its bicubic ILR, aligned, built once and cached as memory-mapped arrays.

The degradation is the evaluation protocol's (vdsr.bench.protocol.degrade): BT.601 Y rounded like MATLAB, modcrop,
MATLAB-exact bicubic down and up; with a degradation `Mix`, seeded draws of scales and of real-world small images
(noisy, JPEG) per image. Batches are a pure function of (seed, step), so a resumed run sees the same data.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import PIL
from numpy.typing import NDArray

from vdsr.bench.datasets import Dataset
from vdsr.bench.protocol import BICUBIC, Degradation, degrade
from vdsr.errors import TrainingError
from vdsr.files import atomic_write_text, sha256_file
from vdsr.runtime.images import load_image

CACHE_FORMAT = 3  # bump when the way patches are made changes, so old caches are not reused


@dataclass(frozen=True)
class PatchSet:
    ilr: NDArray[np.float32]  # (N, P, P) bicubic input, 0..1
    hr: NDArray[np.float32]  # (N, P, P) ground truth, 0..1
    scale: NDArray[np.float32]  # (N,) the scale each patch was made at
    key: str  # hash of the images and settings that made it


@dataclass(frozen=True)
class Mix:
    """How each image's small versions are made (vdsr.train.config.TrainConfig holds the same fields). `draws` 0: the
    paper's set, every image at every scale, clean. `draws` n: n draws per image, each of a scale from `scales`, of
    Gaussian noise (probability, sigma range in 8-bit levels) and of a JPEG (probability, quality range), seeded."""

    scales: tuple[float, ...]
    draws: int = 0
    scale_weights: tuple[float, ...] = ()  # a draw's relative chance of each scale; (): all alike
    jpeg_probability: float = 0.0
    jpeg_quality: tuple[int, int] = (30, 95)
    noise_probability: float = 0.0
    noise_sigma: tuple[float, float] = (0.0, 8.0)
    seed: int = 0


@dataclass(frozen=True)
class Draw:
    scale: float
    degradations: tuple[Degradation, ...]  # applied in turn to the small image; none: the paper's
    seed: int  # the noise's


def image_draws(mix: Mix, index: int) -> list[Draw]:
    """The small images made of the `index`-th training image: a pure function of the mix and the index."""
    if mix.draws == 0 and not (mix.jpeg_probability or mix.noise_probability):
        return [Draw(scale, (), 0) for scale in mix.scales]
    rng = np.random.default_rng([mix.seed, index])
    draws = []
    for n in range(mix.draws or len(mix.scales)):  # every number drawn every time: one setting never shifts another
        scale = mix.scales[draw_scale(rng, mix)] if mix.draws else mix.scales[n]
        noisy, sigma = rng.random() < mix.noise_probability, round(float(rng.uniform(*mix.noise_sigma)), 2)
        jpeg, quality = (
            rng.random() < mix.jpeg_probability,
            int(rng.integers(mix.jpeg_quality[0], mix.jpeg_quality[1] + 1)),
        )
        steps = ((Degradation("noise", sigma),) if noisy else ()) + ((Degradation("jpeg", quality),) if jpeg else ())
        draws.append(Draw(scale, steps, int(rng.integers(2**31))))
    return draws


def draw_scale(rng: np.random.Generator, mix: Mix) -> int:
    """The index of a draw's scale in `mix.scales`, by its weight."""
    if not mix.scale_weights:
        return int(rng.integers(len(mix.scales)))  # as before weights existed: the same draws, the same cache keys
    weights = np.asarray(mix.scale_weights, np.float64)
    return int(rng.choice(len(mix.scales), p=weights / weights.sum()))


def patch_key(files: Sequence[Path], mix: Mix, patch: int, *, stride: int) -> str:
    """A hash of every image's bytes and of the settings: equal keys mean identical patch sets."""
    settings: dict[str, object] = asdict(mix)
    if not mix.scale_weights:
        del settings["scale_weights"]  # the keys of sets built before weights existed stay valid
    if not mix.jpeg_probability:
        del settings["jpeg_quality"]
    if not mix.noise_probability:
        del settings["noise_sigma"]
    if not (mix.draws or mix.jpeg_probability or mix.noise_probability):
        del settings["seed"]  # the paper's set: nothing is drawn
    digest = hashlib.sha256(json.dumps([CACHE_FORMAT, settings, patch, stride]).encode())
    for path in files:
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()[:20]


def image_patches(
    hr: NDArray[np.floating], ilr: NDArray[np.floating], patch: int, *, stride: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """All aligned patch x patch windows on a grid with the given stride (none if the image is smaller)."""
    rows = range(0, hr.shape[0] - patch + 1, stride)
    cols = range(0, hr.shape[1] - patch + 1, stride)
    windows = [(r, c) for r in rows for c in cols]
    if not windows:
        return np.empty((0, patch, patch), np.float32), np.empty((0, patch, patch), np.float32)

    def pick(a: NDArray[np.floating]) -> NDArray[np.float32]:
        return np.stack([a[r : r + patch, c : c + patch] for r, c in windows]).astype(np.float32)

    return pick(hr), pick(ilr)


def build_patches(datasets: Sequence[Dataset], mix: Mix, patch: int, *, stride: int, cache_dir: Path) -> PatchSet:
    """Load the patch set for these images and settings from `cache_dir`, building and caching it if needed."""
    files = [f for d in datasets for f in d.files]
    key = patch_key(files, mix, patch, stride=stride)
    folder = cache_dir / f"patches-{key}"
    found = cached_patches(folder, patch)
    if found is None:  # not built yet, or cut short or damaged since: built (again)
        hr_parts, ilr_parts, scale_parts = [], [], []
        for index, path in enumerate(files):
            color = load_image(path).color
            for draw in image_draws(mix, index):
                degraded = degrade(color, draw.scale, draw.degradations or BICUBIC, seed=draw.seed)
                hr_p, ilr_p = image_patches(degraded.hr_y / 255.0, degraded.ilr(), patch, stride=stride)
                hr_parts.append(hr_p)
                ilr_parts.append(ilr_p)
                scale_parts.append(np.full(len(hr_p), draw.scale, np.float32))
        folder.mkdir(parents=True, exist_ok=True)
        for name, parts in (("hr", hr_parts), ("ilr", ilr_parts), ("scale", scale_parts)):
            tmp = folder / f"{name}.{os.getpid()}.tmp.npy"  # per process: two builders never share a temp file
            with tmp.open("wb") as f:
                np.save(f, np.concatenate(parts))
                f.flush()
                os.fsync(f.fileno())  # on disk before done.json says the set is complete
            tmp.replace(folder / f"{name}.npy")
        summary = {
            "images": len(files),
            "patches": int(sum(len(p) for p in hr_parts)),
            "mix": asdict(mix),
            "pillow": PIL.__version__,
        }  # its libjpeg made the JPEG patches: another version, other bytes
        atomic_write_text(folder / "done.json", json.dumps({**summary, "patch": patch, "stride": stride}))  # last
        found = cached_patches(folder, patch)
        if found is None:
            raise TrainingError(f"{folder}: the patch set just written cannot be read back")
    ilr, hr, scale = found
    return PatchSet(ilr=ilr, hr=hr, scale=scale, key=key)


def cached_patches(
    folder: Path, patch: int
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]] | None:
    """The cached (ilr, hr, scale) arrays, memory-mapped, when done.json says the set is complete and every array
    has the count and shape it says; None otherwise (a file cut short, edited or missing)."""
    try:
        done = json.loads((folder / "done.json").read_text(encoding="utf-8"))
        ilr, hr, scale = (np.load(folder / f"{name}.npy", mmap_mode="r") for name in ("ilr", "hr", "scale"))
    except (OSError, ValueError, EOFError):  # ValueError: a header or length that is not one; EOFError: empty
        return None
    count = done.get("patches") if isinstance(done, dict) else None
    sound = hr.shape == ilr.shape == (count, patch, patch) and scale.shape == (count,)
    return (ilr, hr, scale) if sound and hr.dtype == ilr.dtype == scale.dtype == np.float32 else None


def augment(batch: NDArray[np.float32], variants: NDArray[np.integer]) -> NDArray[np.float32]:
    """Variant v in 0..7 of each (P, P) patch: rotate by 90 * (v % 4) degrees, then mirror left-right if v >= 4."""
    out = np.empty_like(batch)
    for v in range(8):
        chosen = variants == v
        if chosen.any():
            turned = np.rot90(batch[chosen], k=v % 4, axes=(1, 2))
            out[chosen] = turned[:, :, ::-1] if v >= 4 else turned
    return out


VARIANTS = 8  # 4 rotations x mirror: the paper's augmentation


def steps_per_epoch(patches: PatchSet, batch_size: int) -> int:
    """An epoch is one pass over every (patch, variant) pair: the paper's 8x augmented set, drawn on the fly."""
    steps = len(patches.hr) * VARIANTS // batch_size
    if steps == 0:
        raise ValueError(f"{len(patches.hr)} patches x {VARIANTS} variants are fewer than one batch of {batch_size}")
    return steps


def batch_for_step(
    patches: PatchSet, step: int, batch_size: int, *, seed: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The (ILR, HR) batch of `step`: each epoch is a seeded permutation of all (patch, variant) pairs."""
    epoch, position = divmod(step, steps_per_epoch(patches, batch_size))
    order = np.random.default_rng([seed, epoch]).permutation(len(patches.hr) * VARIANTS)
    pairs = np.sort(order[position * batch_size : (position + 1) * batch_size])  # sorted by patch: faster memmap reads
    chosen, variants = np.divmod(pairs, VARIANTS)
    return augment(np.asarray(patches.ilr[chosen]), variants), augment(np.asarray(patches.hr[chosen]), variants)
