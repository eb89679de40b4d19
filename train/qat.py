"""Quantisation-aware training (--qat): the rounding of the int8 graph vdsr.export.quantize writes, simulated in the
forward pass of training so that the weights learn to live with it; the exported graph is then quantised as any other
(ONNX Runtime, static QDQ, calibrated), with fewer convolutions left in fp32.

The int8 graph's arithmetic, which this copies (ONNX Runtime's QDQ quantiser as vdsr.export.quantize calls it):
- each convolution's weights int8 per output channel, symmetric, 7-bit (reduce_range: codes -64..64, scale max|w| / 64);
- each convolution's input uint8 per tensor, asymmetric over a range that holds 0: the ILR for the first, a ReLU's
  output for the others (the quantiser removes the ReLU into its convolution's output range);
- the last convolution's output (the residual) the same, before the fp32 Add.
With `inner`, the first and the last convolution are the graph's fp32 ones, so ONNX Runtime rounds neither the ILR
nor the residual (256 levels over the residual's whole range: no training removes that error; on the shipped vdsr_real,
MinMax ranges, every convolution int8 costs up to 0.147 dB on the selection crops, all but those two 0.026 dB); the
ReLU outputs between them are rounded all the same.
Activation ranges here are each batch's own minimum and maximum (the calibrated ones are fixed, over many crops):
no state, so a resumed run is the uninterrupted one. Rounding passes gradients straight through (Bengio et al. 2013).
Only in training mode: in eval mode (validation, export) the network is the plain fp32 one the graph is made from.
"""

from __future__ import annotations

import torch
from torch import nn

WEIGHT_CODES = 64  # 7-bit symmetric weights: -64..64
ACTIVATION_CODES = 255  # uint8 activations: 0..255


def fake_quantised_activation(x: torch.Tensor) -> torch.Tensor:
    """`x` rounded to 256 levels over [min(x, 0), max(x, 0)] (this batch's range, holding 0 as ONNX Runtime's does)."""
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        x = fake_quantised_activation(x) if self.rounds_input else x
        weight = fake_quantised_weight(self.weight) if self.rounds_weight else self.weight
        out = self._conv_forward(x, weight, self.bias)
        return fake_quantised_activation(out) if self.rounds_output else out


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
