"""VDSR/SRCNN to ONNX: one self-contained file, input (N, 1, H, W) with N, H and W dynamic, fp32 or fp16 arithmetic.

The fp16 graph keeps weights, arithmetic and I/O in fp16 (no Cast nodes: TensorRT 11's strongly typed builder and
ONNX Runtime CUDA run it as is; callers hand in fp16 arrays). metadata_props describe what the runtime needs
(vdsr.metadata.graph_metadata): architecture, trained scales, colour convention, halo (receptive-field radius) and
the source weights' SHA-256.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx
import torch

from vdsr._version import __version__
from vdsr.catalogue import DEFAULT_OPSET
from vdsr.errors import ModelError
from vdsr.files import atomic_write_bytes
from vdsr.metadata import COLOR_CONVENTION, graph_metadata
from vdsr.networks import SRCNN, VDSR, architecture_of

INPUT_NAME = "ilr"
OUTPUT_NAME = "sr"


@contextmanager
def quiet_logger(name: str = "") -> Iterator[None]:
    """Only errors from logger `name` (the root logger by default) while the block runs: a library's notes to its
    developers (torchvision missing, advice to pre-process) are not for our users."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def export_onnx(
    model: VDSR | SRCNN, scales: list[float], weights_sha256: str, *, fp16: bool = False, opset: int = DEFAULT_OPSET
) -> onnx.ModelProto:
    """The model as an ONNX graph (checked with onnx.checker's full check)."""
    dtype = torch.float16 if fp16 else torch.float32
    module = model.to(dtype=dtype).eval()
    over = [name for name, tensor in module.state_dict().items() if not bool(torch.isfinite(tensor).all())]
    if over:  # finite in fp32 (vdsr.weights checked), so over fp16's range
        raise ModelError(f"weights {', '.join(over[:3])} are over fp16's range (65504); export fp32")
    example = torch.rand(2, 1, 24, 32, dtype=dtype)  # batch 2 and H != W so no dimension is specialised
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    with warnings.catch_warnings(), quiet_logger("torch.onnx"), quiet_logger("onnxscript"):
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not for our users
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"ilr": dims},
            external_data=False,
            opset_version=opset,
            optimize=True,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    proto = program.model_proto
    architecture = architecture_of(model)
    metadata = graph_metadata(
        model.config,
        scales,
        precision="fp16" if fp16 else "fp32",
        weights_sha256=weights_sha256,
        producer=f"vdsr {__version__}, torch {torch.__version__}",
    )
    set_metadata(proto, metadata)
    proto.doc_string = f"{architecture.upper()} super-resolution: {COLOR_CONVENTION}"
    onnx.checker.check_model(proto, full_check=True)
    return proto


def save_onnx(proto: onnx.ModelProto, path: Path) -> None:
    atomic_write_bytes(path, proto.SerializeToString())


def set_metadata(proto: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """The graph's metadata_props become `metadata` (vdsr.metadata writes what they hold)."""
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
