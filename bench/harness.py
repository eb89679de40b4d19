"""Run methods over data sets with the paper's protocol: per-image and per-cell PSNR, SSIM and seconds per image."""

from __future__ import annotations

import dataclasses
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from vdsr.bench.datasets import Dataset
from vdsr.bench.protocol import BICUBIC, Degradation, degrade, flat, scorable, score
from vdsr.catalogue import FAMILIES, family_architecture, shipped
from vdsr.errors import ImageError, ModelError, UsageError
from vdsr.model import Model
from vdsr.runtime.backends.base import Backend
from vdsr.runtime.backends.onnx_runtime import OnnxRuntimeBackend
from vdsr.runtime.backends.opening import open_chosen
from vdsr.runtime.backends.specs import Request
from vdsr.runtime.ensemble import TURNS, back, turn
from vdsr.runtime.images import load_image
from vdsr.runtime.resize import imresize


class Method(str, Enum):
    """What the benchmark scores: bicubic, and each family of shipped models (vdsr.catalogue.FAMILIES)."""

    bicubic = "bicubic"
    srcnn = "srcnn"
    vdsr = "vdsr"
    vdsr_real = "vdsr_real"


@dataclass(frozen=True)
class MethodRunner:
    """How one method turns LR luminance (0..1) into SR luminance at `scale` x the size, and what it runs on.

    The runner gets LR, not ILR, so its time covers the whole upscale (the bicubic ILR step included, on the runner's
    device); a runner must make its ILR with this package's MATLAB-exact resize or one proven equal to it.
    """

    name: str
    backend: str
    precision: str
    upscale: Callable[[NDArray[np.floating], float], NDArray[np.floating]]
    scales: tuple[float, ...] | None = None  # the scales a learnt model was trained for; None: any scale
    one_model: bool = True  # False: one model per scale (SRCNN), each scored only at its own

    def runs_at(self, scale: float) -> bool:
        """Whether this method is scored at `scale`: one model trained for several scales (VDSR) runs at any scale,
        as the runtime runs it, the ones in between too; models of one scale each only at their own."""
        if self.scales is None or (self.one_model and len(self.scales) > 1):
            return True
        return scale in self.scales


def bicubic_upscale(lr_y: NDArray[np.floating], scale: float) -> NDArray[np.floating]:
    return imresize(lr_y, scale)


def backend_runner(backend: Backend, name: str) -> MethodRunner:
    """LR -> MATLAB-exact bicubic ILR (numpy) -> the network on a runtime backend, whole images (no tiles)."""

    def upscale(lr_y: NDArray[np.floating], scale: float) -> NDArray[np.floating]:
        sr: NDArray[np.floating] = backend(imresize(lr_y, scale)[None, None])[0, 0]
        if not np.isfinite(sr).all():  # broken weights: never scored (a NaN PSNR is no result)
            raise ModelError(f"{name} on {backend.name}: the network's output holds NaN or inf (broken weights?)")
        return sr

    scales = tuple(backend.scales) or None  # a model without the metadata: no claim either way
    return MethodRunner(name, backend.name, backend.precision, upscale, scales)


def self_ensemble_runner(runner: MethodRunner) -> MethodRunner:
    """`runner` as its geometric self-ensemble, scored as its own method ("vdsr+tta"): the mean of the method on the
    8 flips and rotations of the LR picture, each turned back (vdsr.runtime.ensemble; for integer scales the bicubic
    ILR commutes with the turns, so this is the network's ensemble, as `vdsr-run --tta` runs it). 8 passes: about 10x
    the time."""

    def upscale(lr_y: NDArray[np.floating], scale: float) -> NDArray[np.floating]:
        results = [back(runner.upscale(turn(lr_y, q, flip=f), scale), q, flip=f) for q, f in TURNS]
        mean: NDArray[np.floating] = np.mean(results, axis=0)
        return mean

    return replace(runner, name=f"{runner.name}+tta", upscale=upscale)


def shipped_weights(method: Method) -> list[Path]:
    """The shipped models of a learnt method: each one's ONNX graph where shipped, else its safetensors."""
    paths = []
    for name in FAMILIES[method.value]:  # SRCNN comes as one model per scale, as in its paper
        model = Model.load(name)
        path = model.graphs["fp32"].path if "fp32" in model.graphs else model.weights  # Model refuses neither
        if path is not None:
            paths.append(path)
    if not paths:
        missing = shipped(f"{method.value}.safetensors")
        raise ModelError(f"No weights for {method.value}: {missing} does not exist (train them with vdsr-train)")
    return paths


def weights_runner(path: Path) -> MethodRunner:
    """The runner for one weights file, named by the architecture the file says it holds: an .onnx graph on ONNX
    Runtime (no PyTorch), or .safetensors on PyTorch (CPU, fp32)."""
    if not path.is_file():
        raise ModelError(f"{path}: no such weights file")
    if path.suffix.lower() not in (".onnx", ".safetensors"):
        raise UsageError(f"--weights {path}: expected an .onnx graph or .safetensors weights")
    model = Model.load(path)
    if path.suffix.lower() == ".onnx":
        backend: Backend = OnnxRuntimeBackend(model)  # whole images: no tiles, no halo needed
    else:
        backend = open_chosen(model, Request("torch-cpu"))  # PyTorch only where a learnt model's weights are asked for
    return backend_runner(backend, model.architecture)


def per_scale(method: Method, models: Sequence[tuple[Path, MethodRunner]]) -> MethodRunner:
    """One runner for a method from its models, each used at the scales it was trained for (SRCNN: one per scale),
    named by the method (a vdsr_real model is a vdsr network)."""
    network = family_architecture(method.value)
    for path, runner in models:
        if runner.name != network:
            raise ModelError(f"{path} holds {runner.name} weights, not {method.value} ({network})")
    if len(models) == 1:
        return replace(models[0][1], name=method.value)
    chosen: dict[float, tuple[Path, MethodRunner]] = {}
    for path, runner in models:
        if runner.scales is None:
            raise ModelError(f"{path} records no trained scales: with several {method.value} models, each must")
        for scale in runner.scales:
            if scale in chosen:
                raise ModelError(f"{chosen[scale][0]} and {path} are both {method.value} models for x{scale}")
            chosen[scale] = (path, runner)

    def upscale(lr_y: NDArray[np.floating], scale: float) -> NDArray[np.floating]:
        return chosen[scale][1].upscale(lr_y, scale)

    backend = "+".join(dict.fromkeys(r.backend for _, r in models))
    precision = "+".join(dict.fromkeys(r.precision for _, r in models))
    scales = tuple(sorted(chosen))
    return MethodRunner(method.value, backend, precision, upscale, scales, one_model=False)


def method_runner(method: Method, weights: Sequence[Path] = ()) -> MethodRunner:
    """The runner for a method. Learnt methods run `weights` (several: one model per scale, e.g. SRCNN x2, x3, x4;
    see weights_runner); default: the shipped models."""
    if method is Method.bicubic:
        return MethodRunner(name="bicubic", backend="numpy", precision="fp64", upscale=bicubic_upscale)
    paths = list(weights) or shipped_weights(method)
    return per_scale(method, [(p, weights_runner(p)) for p in paths])


@dataclass(frozen=True)
class ImageResult:
    dataset: str
    method: str
    scale: float
    image: str
    height: int  # of the modcropped ground truth
    width: int
    psnr: float
    ssim: float
    seconds: float  # the method alone: LR in, SR out (no decoding, no scoring)


@dataclass(frozen=True)
class CellResult:
    dataset: str
    method: str
    scale: float
    psnr: float
    ssim: float
    images: int
    seconds_per_image: float
    backend: str
    precision: str
    verified: bool = True  # False for a plain folder: never compared with the paper, whatever its name
    degradation: str = "bicubic"  # how the small image was made (vdsr.bench.protocol.Degradation): the paper's


@dataclass(frozen=True)
class Outputs:
    """What every method made of one image at one scale, for pictures: the HR colour image (modcropped, [0, 1]) and
    each method's luminance (0..1)."""

    dataset: str
    image: Path
    scale: float
    hr: NDArray[np.floating]
    methods: dict[str, NDArray[np.floating]]


ImageKey = tuple[str, str, float, str]  # (dataset, image, scale, method)


def image_key(result: ImageResult) -> ImageKey:
    return (result.dataset, result.image, result.scale, result.method)


@dataclass(frozen=True)
class Failure:
    dataset: str
    image: str
    scale: float | None  # None when the file itself could not be read
    error: str


@dataclass(frozen=True)
class BenchRun:
    cells: list[CellResult]
    images: list[ImageResult]
    failures: list[Failure]
    left_out: list[str]  # why a method has no cell at some scale (not trained for it): not a failure


def run_bench(
    datasets: Sequence[Dataset],
    scales: Sequence[float],
    methods: Sequence[MethodRunner],
    *,
    on_progress: Callable[[int], None] = lambda steps: None,
    done: dict[ImageKey, ImageResult] | None = None,
    on_image: Callable[[ImageResult], None] = lambda result: None,
    on_outputs: Callable[[Outputs], None] | None = None,
    degradation: Degradation = BICUBIC,
) -> BenchRun:
    """Score every method on every image at every scale. One step = one (image, scale, method); a file that cannot be
    read, is too small for a scale or is one flat value where it is scored is recorded as a failure and the rest
    still runs. A learnt method is not scored at a scale it was not trained for (a x2 SRCNN at x3 is no SRCNN x3
    result): those cells are left out, and said.
    `done`: results of an interrupted run of the same bench, kept instead of scored again; `on_image` gets each new
    result as it comes; `on_outputs` the methods' outputs of each image and scale (not kept otherwise)."""
    done = done or {}
    images: list[ImageResult] = []
    failures: list[Failure] = []
    warmed: set[tuple[str, float]] = set()
    for dataset in datasets:
        for path in dataset.files:
            try:
                color = load_image(path).color
            except ImageError as error:
                failures.append(Failure(dataset.name, path.name, None, str(error)))
                on_progress(len(scales) * len(methods))
                continue
            for scale in scales:
                if not scorable(color.shape, scale):
                    size = f"{color.shape[1]}x{color.shape[0]}"
                    cause = f"{path}: {size} is too small for x{scale} (after modcrop and shaving, SSIM needs 11x11)"
                    failures.append(Failure(dataset.name, path.name, scale, cause))
                    on_progress(len(methods))
                    continue
                degraded = degrade(color, scale, degradation, seed=zlib.crc32(path.name.encode()) + int(scale * 4))
                gt_y, lr_y = degraded.hr_y, degraded.lr_y
                if flat(gt_y, scale):
                    cause = f"{path}: one flat value after shaving; PSNR is not defined for it, so it is not scored"
                    failures.append(Failure(dataset.name, path.name, scale, cause))
                    on_progress(len(methods))
                    continue
                outputs: dict[str, NDArray[np.floating]] = {}
                for runner in methods:
                    if not runner.runs_at(scale):
                        on_progress(1)
                        continue
                    previous = done.get((dataset.name, path.name, scale, runner.name))
                    if previous is not None:
                        images.append(previous)
                        on_progress(1)
                        continue
                    if (runner.name, scale) not in warmed:  # first call pays one-off costs (allocations, sessions)
                        runner.upscale(lr_y, scale)
                        warmed.add((runner.name, scale))
                    start = time.perf_counter()
                    sr_y = runner.upscale(lr_y, scale)
                    seconds = time.perf_counter() - start
                    result = score(sr_y, gt_y, scale)
                    images.append(
                        ImageResult(
                            dataset.name,
                            runner.name,
                            scale,
                            path.name,
                            gt_y.shape[0],
                            gt_y.shape[1],
                            result.psnr,
                            result.ssim,
                            seconds,
                        )
                    )
                    outputs[runner.name] = sr_y
                    on_image(images[-1])
                    on_progress(1)
                if on_outputs is not None and outputs:
                    hr = color[: gt_y.shape[0], : gt_y.shape[1]]  # modcropped as the ground truth
                    on_outputs(Outputs(dataset.name, path, scale, hr, outputs))
    left_out = [
        f"{m.name}: no x{s:g} cells (the model was trained for {', '.join(f'x{t}' for t in m.scales or ())})"
        for m in methods
        for s in scales
        if not m.runs_at(s)
    ]
    verified = {d.name: d.verified for d in datasets}
    cells = [
        dataclasses.replace(c, degradation=str(degradation)) for c in summarize(images, methods, verified=verified)
    ]
    return BenchRun(cells=cells, images=images, failures=failures, left_out=left_out)


def summarize(
    images: Sequence[ImageResult], methods: Sequence[MethodRunner], *, verified: dict[str, bool] | None = None
) -> list[CellResult]:
    """Mean over the images of each (dataset, method, scale), in the order the cells were first seen."""
    groups: dict[tuple[str, str, float], list[ImageResult]] = {}
    for r in images:
        groups.setdefault((r.dataset, r.method, r.scale), []).append(r)
    runners = {m.name: m for m in methods}
    return [
        CellResult(
            dataset=dataset,
            method=method,
            scale=scale,
            psnr=float(np.mean([r.psnr for r in group])),
            ssim=float(np.mean([r.ssim for r in group])),
            images=len(group),
            seconds_per_image=float(np.mean([r.seconds for r in group])),
            backend=runners[method].backend,
            precision=runners[method].precision,
            verified=(verified or {}).get(dataset, False),
        )
        for (dataset, method, scale), group in groups.items()
    ]
