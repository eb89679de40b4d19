"""An int8 graph for CPUs: the fp32 ONNX graph quantised by ONNX Runtime (static, QDQ), with its cost measured.

- Weights int8 per output channel; activations uint8 per tensor, ranges from MinMax calibration on ILR crops of the
  T91 training images (never a test set), at every trained scale.
- The first and the last convolution and the residual Add stay fp32: the input and the residual the network adds to
  the ILR are where 8 bits show; the 18 middle layers, nearly all the arithmetic, run on int8 (VNNI) kernels.
- The quantised graph is scored against the fp32 graph on Set5 and Set14 through the bench protocol; metadata_props
  record the largest PSNR cost over those cells (`int8_max_cost_db`) and the calibration, so a runtime can decide.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray

from vdsr.bench.datasets import resolve_dataset
from vdsr.bench.harness import backend_runner, run_bench
from vdsr.bench.protocol import degrade
from vdsr.errors import DatasetError, ModelError
from vdsr.files import atomic_write_bytes
from vdsr.runtime.backends.onnx_runtime import OnnxRuntimeBackend
from vdsr.runtime.images import load_image

CALIBRATION_SET = "T91"
CROP = 96


def calibration_batches(
    data_dir: Path | None, scales: list[int], *, every: int = 3, seed: int = 0
) -> list[NDArray[np.float32]]:
    """One (1, 1, CROP, CROP) ILR crop per scale from every `every`-th T91 image, made as the training data is (the
    protocol's degradation)."""
    rng = np.random.default_rng(seed)
    batches = []
    for path in resolve_dataset(CALIBRATION_SET, data_dir).files[::every]:
        color = load_image(path).color
        for scale in scales:
            ilr = degrade(color, scale).ilr().astype(np.float32)
            top = int(rng.integers(0, max(1, ilr.shape[0] - CROP + 1)))
            left = int(rng.integers(0, max(1, ilr.shape[1] - CROP + 1)))
            batches.append(ilr[None, None, top : top + CROP, left : left + CROP])
    return batches


def kept_in_fp32(model: onnx.ModelProto) -> list[str]:
    """The first and last Conv and every Add (the residual), by node name."""
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    return sorted({convs[0], convs[-1], *(n.name for n in model.graph.node if n.op_type == "Add")})


def quantize_int8(fp32_graph: Path, output: Path, data_dir: Path | None) -> dict[str, str]:
    """Write the int8 graph of `fp32_graph` to `output`; returns what was recorded in its metadata."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    fp32 = onnx.load(str(fp32_graph))
    metadata = {p.key: p.value for p in fp32.metadata_props}
    if metadata.get("precision") != "fp32":
        raise ModelError(f"{fp32_graph}: quantise the fp32 graph, not a {metadata.get('precision')} one")
    scales = [int(s) for s in json.loads(metadata["scales"])]
    batches = iter(calibration_batches(data_dir, scales))

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            batch = next(batches, None)
            return None if batch is None else {fp32.graph.input[0].name: batch}

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser's advice (on the root logger) to pre-process is not for a plain CNN
    with tempfile.TemporaryDirectory() as tmp:
        quantized = Path(tmp) / "int8.onnx"
        try:
            quantize_static(
                str(fp32_graph), str(quantized), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=kept_in_fp32(fp32),
            )  # fmt: skip
        finally:
            root.setLevel(level)
        cost = measure_cost(fp32_graph, quantized, data_dir)
        model = onnx.load(str(quantized))
    recorded = {
        "precision": "int8",
        "calibration": f"MinMax on {CALIBRATION_SET} ILR crops ({CROP}x{CROP}, every 3rd image, scales {scales})",
        "int8_cost_db": json.dumps(cost),
        "int8_max_cost_db": f"{max(cost.values()):.4f}",
    }
    del model.metadata_props[:]
    for key, value in (metadata | recorded).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    atomic_write_bytes(output, model.SerializeToString())
    return recorded


def measure_cost(fp32_graph: Path, int8_graph: Path, data_dir: Path | None) -> dict[str, float]:
    """PSNR(fp32) - PSNR(int8) per 'Set5 x2' cell, Set5 and Set14 at the trained scales (validation sets only)."""
    datasets = [resolve_dataset(name, data_dir) for name in ("Set5", "Set14")]
    with OnnxRuntimeBackend(fp32_graph) as reference, OnnxRuntimeBackend(int8_graph) as quantized:
        scales = reference.scales
        run = run_bench(datasets, scales, [backend_runner(reference, "fp32"), backend_runner(quantized, "int8")])
    if run.failures:
        raise DatasetError("; ".join(f.error for f in run.failures))
    psnr = {(c.dataset, c.scale, c.method): c.psnr for c in run.cells}
    return {f"{d.name} x{s}": round(psnr[(d.name, s, "fp32")] - psnr[(d.name, s, "int8")], 4)
            for d in datasets for s in scales}  # fmt: skip
