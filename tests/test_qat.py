"""Quantisation-aware training (vdsr.train.qat): its rounding is ONNX Runtime's (the quantiser's own formulas for
scales and zero points, and its QuantizeLinear), it leaves the parameters and eval mode alone, and gradients pass;
its calibrated ranges are the export's MinMax calibration's, and a run with them resumes exactly."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from onnxruntime.quantization.quant_utils import compute_scale_zp, quantize_nparray
from PIL import Image

from vdsr.bench.datasets import Dataset
from vdsr.errors import TrainingError
from vdsr.export.quantize import Quantiser
from vdsr.networks import VDSR, VDSRConfig
from vdsr.train import qat
from vdsr.train.checkpoint import load_checkpoint, save_checkpoint
from vdsr.train.config import recipe
from vdsr.train.data import PatchSet
from vdsr.train.loop import train
from vdsr.train.qat import (
    ACTIVATION_CODES,
    WEIGHT_CODES,
    FakeQuantConv2d,
    calibrate,
    fake_quantised_activation,
    fake_quantised_weight,
    quantisation_aware,
)
from vdsr.weights import load_weights


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


def test_a_fixed_range_rounds_as_onnx_runtime_does_and_saturates_outside_it() -> None:
    x = np.random.default_rng(3).uniform(-0.4, 2.0, (2, 3, 8, 8)).astype(np.float32)
    ours = fake_quantised_activation(torch.from_numpy(x), (-0.2, 1.5)).numpy()
    zero, scale = compute_scale_zp(np.float32(-0.2), np.float32(1.5), np.uint8(0), np.uint8(ACTIVATION_CODES))
    theirs = (quantize_nparray(TensorProto.UINT8, x, scale, zero).astype(np.float32) - np.float32(zero)) * scale
    assert np.max(np.abs(ours - theirs)) <= 1e-6 * 2
    assert ours.max() <= 1.5 + 1e-6 and ours.min() >= -0.2 - 1e-6 and x.max() > 1.9  # values outside saturate
    own = torch.from_numpy(x)  # a fixed range equal to the batch's own rounds bit for bit as the batch's does
    assert torch.equal(fake_quantised_activation(own, (float(own.min()), float(own.max()))),
                       fake_quantised_activation(own))  # fmt: skip
    inside = torch.tensor([-0.3, 0.5, 1.7], requires_grad=True)
    fake_quantised_activation(inside, (-0.2, 1.5)).sum().backward()
    assert inside.grad is not None and inside.grad.tolist() == [0.0, 1.0, 0.0]  # straight through, not past the range


def activation_quantisers(graph: Path) -> list[tuple[float, int]]:
    """(scale, zero point) of each uint8 QuantizeLinear in an int8 graph, in the graph's order: its activations'
    ranges."""
    model = onnx.load(str(graph))
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and constants[node.input[2]].dtype == np.uint8:
            found.append((float(constants[node.input[1]]), int(constants[node.input[2]])))
    return found


def test_calibrated_ranges_are_the_export_calibrations(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    """The ranges a calibrated run rounds over are the ones the export's MinMax calibration puts in the int8 graph,
    for the same inputs: every convolution's input and the residual."""
    model, _ = load_weights(tiny_model["weights"])
    aware = quantisation_aware(model, "every").train()
    rng = np.random.default_rng(4)
    batches = [rng.uniform(-0.05, 1.05, (3, 1, 20, 20)).astype(np.float32) for _ in range(3)]
    ranges = calibrate(aware, [torch.from_numpy(b) for b in batches])
    assert aware.training and len(ranges) == 5  # 4 convolution inputs and the residual; the mode is given back
    ours = [  # in calibrate's order, which set_ranges follows
        (float(scale), int(zero))
        for low, high in ranges
        for zero, scale in [compute_scale_zp(np.float32(low), np.float32(high), np.uint8(0), np.uint8(255))]
    ]
    theirs = activation_quantisers(Quantiser(tiny_model["onnx"], batches, tmp_path)("MinMax", []))
    assert len(theirs) == len(ours)
    for (a, za), (b, zb) in zip(ours, theirs, strict=True):
        assert za == zb and a == pytest.approx(b, rel=1e-5)


def tiny_t91(folder: Path) -> Dataset:
    """Calibration images: the export's crops need 64 ILR pixels a side at every scale."""
    folder.mkdir()
    rng = np.random.default_rng(5)
    for n in range(2):
        pixels = (np.cumsum(rng.integers(-9, 10, (80, 90, 3)), axis=1) % 256).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{n}.png")
    return Dataset("T91", tuple(sorted(folder.glob("*.png"))), verified=False)


def test_a_run_with_calibrated_ranges_measures_them_again_and_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(qat, "RECALIBRATE_EVERY", 4)  # steps 0, 4 and 8 measure; the resume comes at step 6
    t91 = tiny_t91(tmp_path / "T91")
    rng = np.random.default_rng(0)
    hr = rng.random((64, 12, 12)).astype(np.float32)
    patches = PatchSet(ilr=(hr + np.roll(hr, 1, 1)) / 2, hr=hr, scale=np.full(64, 2, np.int8), key="synthetic")
    config = recipe(
        "fast", "vdsr", network={"depth": 3, "channels": 8}, batch_size=8, epochs=4, bf16=False,
        log_every=1, checkpoint_every=3, validate_every=10_000, scales=(2, 3), qat="inner", qat_ranges="calibrated",
    )  # fmt: skip

    def run(steps: int, out: str, **kwargs: object) -> dict[str, object]:
        cpu = torch.device("cpu")
        train(replace(config, max_steps=steps), patches, tmp_path / out, device=cpu, train_sets=[t91], **kwargs)  # type: ignore[arg-type]
        return load_checkpoint(tmp_path / out / "checkpoint.safetensors").__dict__

    first = run(6, "a")["info"]["qat_ranges"]  # type: ignore[index]
    resumed, straight = run(12, "a", resume=True), run(12, "b")
    assert resumed["info"]["qat_ranges"] == straight["info"]["qat_ranges"] != first  # type: ignore[index]
    assert len(first) == 2  # inner, depth 3: the second and the last convolutions' inputs
    for name, tensor in straight["model"].items():  # type: ignore[attr-defined]
        assert torch.allclose(resumed["model"][name], tensor, rtol=0, atol=1e-6), name  # type: ignore[index]
    with pytest.raises(TrainingError, match="T91: it is not among the training sets"):
        train(config, patches, tmp_path / "c", device=torch.device("cpu"))
    with pytest.raises(ValueError, match="qat_ranges calibrated .* needs qat"):
        replace(config, qat="off")
    checkpoint = tmp_path / "a" / "checkpoint.safetensors"
    saved = load_checkpoint(checkpoint)
    for info, why in (
        ({k: v for k, v in saved.info.items() if k != "qat_ranges"}, "is not 2 pairs"),  # a step past 0 without them
        (saved.info | {"qat_ranges": [[0.1, 1.0], [0.0, 1.0]]}, "low <= 0 <= high"),
        (saved.info | {"qat_ranges": [[0.0, 1.0]]}, "is not 2 pairs"),
    ):
        save_checkpoint(checkpoint, replace(saved, info=info))
        with pytest.raises(TrainingError, match=why):
            run(14, "a", resume=True)
