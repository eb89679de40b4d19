"""Quantisation-aware training (--qat): the rounding of the int8 graph vdsr.export.quantize writes, simulated in the
forward pass of training so that the weights learn to live with it; the exported graph is then quantised as any other
(ONNX Runtime, static QDQ, calibrated), with fewer convolutions left in fp32.

The int8 graph's arithmetic, which this copies (ONNX Runtime's QDQ quantiser as vdsr.export.quantize calls it):
- each convolution's weights int8 per output channel, symmetric, 7-bit (reduce_range: codes -64..64, scale max|w| / 64);
- each convolution's input uint8 per tensor, asymmetric over a range that holds 0: the ILR for the first, a ReLU's
  output for the others (the quantiser removes the ReLU into its convolution's output range);
- the last convolution's output (the residual) the same, before the fp32 Add.
The residual Add reads the unrounded ILR (the export gives it back: exact_residual_input). With `inner`, the first and
the last convolution are the graph's fp32 ones, so ONNX Runtime rounds neither the ILR nor the residual (256 levels over
the residual's whole range: no training removes that error; on the shipped vdsr_real, MinMax ranges, every convolution
int8 costs up to 0.147 dB on the selection crops, all but those two 0.026 dB); the ReLU outputs between them are rounded
all the same.
Activation ranges (config.qat_ranges): `batch`, each batch's own minimum and maximum, no state; or `calibrated`, the
graph's own where the export calibrates with MinMax: the trained (not the averaged, --ema) fp32 network's minimum and
maximum over the export's calibration crops (vdsr.bench.calibration), the widest of any rank's, measured again every
RECALIBRATE_EVERY steps and kept in the checkpoint, so that a resumed run is the uninterrupted one. The calibrated
ranges are wider than a batch's (the shipped vdsr_real's QAT weights: 1.04-1.51x the median batch's, layer by layer), so
`batch` trains with finer rounding than the graph has. Values outside a range saturate, as in the graph. Rounding passes
gradients straight through within the range (Bengio et al. 2013).
Only in training mode: in eval mode (validation, export) the network is the plain fp32 one the graph is made from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from vdsr.bench.calibration import CALIBRATION_SET, calibration_crops
from vdsr.bench.datasets import Dataset
from vdsr.errors import TrainingError
from vdsr.train.config import RECALIBRATE_EVERY, TrainConfig
from vdsr.train.distributed import SINGLE, Ranks, largest

WEIGHT_CODES = 64  # 7-bit symmetric weights: -64..64
ACTIVATION_CODES = 255  # uint8 activations: 0..255


def fake_quantised_activation(x: torch.Tensor, fixed: tuple[float, float] | None = None) -> torch.Tensor:
    """`x` rounded to 256 levels over [min(x, 0), max(x, 0)] (this batch's range, holding 0 as ONNX Runtime's does),
    or over the `fixed` (low, high)."""
    if fixed is not None:  # the same float32 arithmetic on the host: no device tensors made per layer and step
        low32, high32 = np.float32(fixed[0]), np.float32(fixed[1])
        step = max(np.float32((high32 - low32) / np.float32(ACTIVATION_CODES)), np.float32(1e-8))
        code = int(np.round(-low32 / step))
        return torch.fake_quantize_per_tensor_affine(x.float(), float(step), code, 0, ACTIVATION_CODES).to(x.dtype)
    low = torch.clamp(x.detach().amin(), max=0.0).float()
    high = torch.clamp(x.detach().amax(), min=0.0).float()
    scale = torch.clamp((high - low) / ACTIVATION_CODES, min=1e-8)
    zero = torch.round(-low / scale).to(torch.int32)
    return torch.fake_quantize_per_tensor_affine(x.float(), scale, zero, 0, ACTIVATION_CODES).to(x.dtype)


def fake_quantised_weight(weight: torch.Tensor) -> torch.Tensor:
    """`weight` rounded per output channel to WEIGHT_CODES levels each side of 0 (symmetric)."""
    scale = torch.clamp(weight.detach().abs().amax(dim=(1, 2, 3)).float() / WEIGHT_CODES, min=1e-12)
    zero = torch.zeros(weight.shape[0], dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_channel_affine(weight.float(), scale, zero, 0, -WEIGHT_CODES, WEIGHT_CODES).to(
        weight.dtype
    )


class FakeQuantConv2d(nn.Conv2d):
    """A Conv2d (the same parameters and state_dict) whose training-mode forward rounds its input and weights, and
    its output if asked, as the int8 graph does."""

    rounds_input: bool = True
    rounds_weight: bool = True
    rounds_output: bool = False
    input_range: tuple[float, float] | None = None  # calibrated ranges; None: the batch's
    output_range: tuple[float, float] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        x = fake_quantised_activation(x, self.input_range) if self.rounds_input else x
        weight = fake_quantised_weight(self.weight) if self.rounds_weight else self.weight
        out = self._conv_forward(x, weight, self.bias)
        return fake_quantised_activation(out, self.output_range) if self.rounds_output else out


MODES = ("every", "inner")  # every convolution int8; all but the first and the last


def quantisation_aware(model: nn.Module, mode: str) -> nn.Module:
    """`model` (in place) with each Conv2d a FakeQuantConv2d rounding as the int8 graph of `mode` does."""
    if mode not in MODES:
        raise ValueError(f"Unknown quantisation-aware mode {mode!r}; expected one of {MODES}")
    convs = [m for m in model.modules() if type(m) is nn.Conv2d]
    for conv in convs:
        conv.__class__ = FakeQuantConv2d  # the same module and parameters; only forward changes
    first, last = convs[0], convs[-1]  # instance attributes over the class's defaults
    if mode == "every":
        last.rounds_output = True  # type: ignore[assignment]
    else:
        first.rounds_input = first.rounds_weight = last.rounds_weight = False  # type: ignore[assignment]
    return model


def rounded(model: nn.Module) -> list[tuple[FakeQuantConv2d, str]]:
    """Each activation `model` rounds, in order: (convolution, "input" or "output")."""
    found = []
    for m in model.modules():
        if isinstance(m, FakeQuantConv2d):
            found += [(m, side) for side, on in (("input", m.rounds_input), ("output", m.rounds_output)) if on]
    return found


def calibrate(model: nn.Module, batches: list[torch.Tensor]) -> list[tuple[float, float]]:
    """The range of each activation `model` rounds, over `batches` through the fp32 network (eval mode), holding 0:
    what ONNX Runtime's MinMax calibration finds on the same inputs."""
    sides = rounded(model)
    seen: list[list[float]] = [[0.0, 0.0] for _ in sides]

    def record(index: int, side: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            t = inputs[0] if side == "input" else output
            seen[index][0] = min(seen[index][0], float(t.amin()))
            seen[index][1] = max(seen[index][1], float(t.amax()))

        return hook

    handles = [conv.register_forward_hook(record(i, side)) for i, (conv, side) in enumerate(sides)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return [(low, high) for low, high in seen]


def set_ranges(model: nn.Module, ranges: list[tuple[float, float]]) -> None:
    """Round `model`'s activations over `ranges` (calibrate's order) from now on."""
    sides = rounded(model)
    if len(ranges) != len(sides):
        raise ValueError(f"{len(ranges)} activation ranges for {len(sides)} rounded activations")
    for (conv, side), (low, high) in zip(sides, ranges, strict=True):
        setattr(conv, f"{side}_range", (float(low), float(high)))


class RangeKeeper:
    """config.qat_ranges in a run: with `calibrated`, the model's ranges measured on the export's calibration crops of
    CALIBRATION_SET (one of `train_sets`) at every RECALIBRATE_EVERY-th step, and kept in the checkpoint's info;
    otherwise nothing."""

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        train_sets: Sequence[Dataset],
        *,
        device: torch.device,
        ranks: Ranks = SINGLE,
    ) -> None:
        self.model, self.device, self.ranks = model, device, ranks
        self.ranges: list[tuple[float, float]] | None = None
        self.batches: list[torch.Tensor] | None = None
        if config.qat_ranges != "calibrated":
            return
        found = [d for d in train_sets if d.name == CALIBRATION_SET]
        if not found:
            raise TrainingError(
                f"--qat-ranges calibrated measures the ranges on {CALIBRATION_SET}: it is not among the training sets"
            )
        self.batches = [torch.from_numpy(b).to(device) for b in calibration_crops(found[0], list(config.scales))]

    def at(self, step: int) -> None:
        """Before training step `step`: measure the ranges again when it is their turn."""
        if self.batches is not None and (self.ranges is None or step % RECALIBRATE_EVERY == 0):
            found = calibrate(self.model, self.batches)  # every rank's own; then the widest, so that all agree
            self.ranges = [
                (-largest(-low, self.ranks, self.device), largest(high, self.ranks, self.device)) for low, high in found
            ]
            set_ranges(self.model, self.ranges)

    def info(self) -> dict[str, object]:
        """What the checkpoint keeps."""
        return {} if self.ranges is None else {"qat_ranges": [list(r) for r in self.ranges]}

    def restore(self, info: dict[str, object], source: object) -> None:
        """The ranges a checkpoint kept (`source` names it in errors); only a checkpoint of step 0 has none."""
        if self.batches is None or ("qat_ranges" not in info and info.get("step") == 0):
            return
        saved = info.get("qat_ranges")
        sides = len(rounded(self.model))
        if not (
            isinstance(saved, list)
            and len(saved) == sides
            and all(
                isinstance(r, list)
                and len(r) == 2
                and all(isinstance(v, float) and math.isfinite(v) for v in r)
                and r[0] <= 0 <= r[1]
                for r in saved
            )
        ):
            raise TrainingError(f"{source}: 'qat_ranges' is not {sides} pairs of finite numbers low <= 0 <= high")
        self.ranges = [(r[0], r[1]) for r in saved]
        set_ranges(self.model, self.ranges)
