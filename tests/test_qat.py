"""Quantisation-aware training (vdsr.train.qat): its rounding is ONNX Runtime's (the quantiser's own formulas for
scales and zero points, and its QuantizeLinear), it leaves the parameters and eval mode alone, and gradients pass."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from onnx import TensorProto
from onnxruntime.quantization.quant_utils import compute_scale_zp, quantize_nparray

from vdsr.networks import VDSR, VDSRConfig
from vdsr.train.qat import (
    ACTIVATION_CODES,
    WEIGHT_CODES,
    FakeQuantConv2d,
    fake_quantised_activation,
    fake_quantised_weight,
    quantisation_aware,
)


def onnx_runtime_activation(x: np.ndarray) -> np.ndarray:
    """uint8 per tensor, asymmetric, as the quantiser computes it from a calibrated range (here x's own)."""
    low, high = np.float32(min(x.min(), 0)), np.float32(max(x.max(), 0))
    zero, scale = compute_scale_zp(low, high, np.uint8(0), np.uint8(ACTIVATION_CODES))
    codes = quantize_nparray(TensorProto.UINT8, x, scale, zero)
    return (codes.astype(np.float32) - np.float32(zero)) * np.float32(scale)


def onnx_runtime_weight(w: np.ndarray) -> np.ndarray:
    """int8 per output channel, symmetric, reduce_range (-64..64), as the quantiser does a Conv's weights."""
    out = np.empty_like(w)
    for c in range(w.shape[0]):
        zero, scale = compute_scale_zp(
            np.float32(w[c].min()),
            np.float32(w[c].max()),
            np.int8(-WEIGHT_CODES),
            np.int8(WEIGHT_CODES),
            symmetric=True,
        )
        codes = quantize_nparray(TensorProto.INT8, w[c], scale, zero)
        out[c] = (codes.astype(np.float32) - np.float32(zero)) * np.float32(scale)
    return out


@pytest.mark.parametrize("low", [0.0, -0.7])  # a ReLU's output; the residual, both signs
def test_activation_rounding_is_onnx_runtimes(low: float) -> None:
    x = np.random.default_rng(1).uniform(low, 1.3, (2, 4, 9, 9)).astype(np.float32)
    ours = fake_quantised_activation(torch.from_numpy(x)).numpy()
    theirs = onnx_runtime_activation(x)
    step = (x.max() - min(x.min(), 0)) / ACTIVATION_CODES
    assert np.max(np.abs(ours - theirs)) <= 1e-6 * max(1.0, float(np.abs(x).max()))
    assert np.max(np.abs(ours - x)) <= step / 2 + 1e-6
    assert len(np.unique(ours)) <= ACTIVATION_CODES + 1


def test_weight_rounding_is_onnx_runtimes_7_bit_per_channel() -> None:
    w = np.random.default_rng(2).normal(0, 0.05, (6, 3, 3, 3)).astype(np.float32)
    w[2] *= 20  # channels of very different ranges each get their own scale
    ours = fake_quantised_weight(torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(ours, onnx_runtime_weight(w), rtol=0, atol=1e-7)
    for c in range(w.shape[0]):
        assert len(np.unique(ours[c])) <= 2 * WEIGHT_CODES + 1
        assert np.max(np.abs(ours[c] - w[c])) <= np.abs(w[c]).max() / WEIGHT_CODES / 2 + 1e-7


@pytest.mark.parametrize(
    ("mode", "rounding"),
    [
        ("every", [(True, True, False), (True, True, False), (True, True, False), (True, True, True)]),
        ("inner", [(False, False, False), (True, True, False), (True, True, False), (True, False, False)]),
    ],
)
def test_the_network_keeps_its_parameters_and_is_plain_in_eval_mode(
    mode: str, rounding: list[tuple[bool, bool, bool]]
) -> None:
    torch.manual_seed(0)
    plain = VDSR(VDSRConfig(depth=4, channels=8))
    aware = quantisation_aware(copy.deepcopy(plain), mode)
    convs = [m for m in aware.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(type(m) is FakeQuantConv2d for m in convs)
    # every: the residual rounded too; inner: the first and last convolutions fp32, the ReLU outputs rounded
    assert [(m.rounds_input, m.rounds_weight, m.rounds_output) for m in convs] == rounding
    assert list(aware.state_dict()) == list(plain.state_dict())  # the weights file and checkpoints are unchanged
    x = torch.rand(2, 1, 16, 16)
    plain.eval(), aware.eval()
    assert torch.equal(aware(x), plain(x))
    aware.train()
    rounded = aware(x)
    assert not torch.equal(rounded, plain(x)) and torch.allclose(rounded, plain(x), atol=0.05)


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="inner"):
        quantisation_aware(VDSR(VDSRConfig(depth=3, channels=8)), "all")


def test_gradients_pass_through_the_rounding() -> None:
    torch.manual_seed(0)
    aware = quantisation_aware(VDSR(VDSRConfig(depth=3, channels=8)), "every").train()
    aware(torch.rand(2, 1, 12, 12)).square().mean().backward()
    for name, parameter in aware.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
