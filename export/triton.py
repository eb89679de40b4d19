"""A Triton Inference Server model repository: one exported graph as a model Triton serves, beside its config.

    DIR/<name>/config.pbtxt       onnxruntime backend; input "ilr", output "sr": [N, 1, H, W], N up to MAX_BATCH, H
    DIR/<name>/1/model.onnx       and W dynamic; fp32/int8 graphs on CPU instances, the fp16 graph on GPU ones
    DIR/<name>_trt/config.pbtxt   with an engine: tensorrt backend, batch and sizes bounded by the engine's profile
    DIR/<name>_trt/1/model.plan

Version 1 only (version_policy), so an older version folder left in DIR/<name> is never served instead. The
configs are Triton's ModelConfig protobuf in text form (tests parse them with tritonclient's model_config_pb2).
Triton itself cannot be installed in this project's environment: the repository has not been served here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vdsr.errors import ModelError
from vdsr.files import atomic_write_bytes, atomic_write_text

MAX_BATCH = 8  # requests of the same size Triton's dynamic batcher may stack into one call
VERSION = "1"


@dataclass(frozen=True)
class TritonModel:
    """What config.pbtxt says of one model."""

    name: str
    backend: str  # "onnxruntime" or "tensorrt"
    data_type: str  # TYPE_FP32 or TYPE_FP16: the graph's input and output
    kind: str  # KIND_CPU or KIND_GPU: where its instances run
    max_batch: int
    input_name: str
    output_name: str

    @property
    def file(self) -> str:
        return "model.plan" if self.backend == "tensorrt" else "model.onnx"


def model_config(model: TritonModel) -> str:
    """config.pbtxt: dims exclude the batch, which Triton adds (max_batch_size > 0); -1 is a dynamic size."""
    tensor = '{{ name: "{}" data_type: {} dims: [ 1, -1, -1 ] }}'
    return "\n".join(
        [
            f'name: "{model.name}"',
            f'backend: "{model.backend}"',
            f"max_batch_size: {model.max_batch}",
            f"input [ {tensor.format(model.input_name, model.data_type)} ]",
            f"output [ {tensor.format(model.output_name, model.data_type)} ]",
            f"instance_group [ {{ count: 1 kind: {model.kind} }} ]",
            "dynamic_batching { }",
            f"version_policy {{ specific {{ versions: [ {VERSION} ] }} }}",
            "",
        ]
    )


def write_model(repository: Path, model: TritonModel, artifact: Path) -> Path:
    """DIR/<name>/config.pbtxt, then DIR/<name>/1/model.* (the graph or engine copied), each file written atomically
    (a folder left without its model fails to load rather than loading Triton's guesses); returns the model's
    folder. ModelError naming the folder if it cannot be written."""
    folder = repository / model.name
    try:
        atomic_write_text(folder / "config.pbtxt", model_config(model))
        atomic_write_bytes(folder / VERSION / model.file, artifact.read_bytes())
    except OSError as error:
        raise ModelError(f"{folder}: cannot write the Triton model ({error.strerror or error})") from error
    return folder


def onnx_model(name: str, precision: str, *, input_name: str, output_name: str) -> TritonModel:
    """The ONNX Runtime model for a graph of `precision`: fp16 graphs on GPUs, fp32 and int8 graphs on CPUs."""
    gpu = precision == "fp16"
    return TritonModel(
        name,
        "onnxruntime",
        "TYPE_FP16" if gpu else "TYPE_FP32",
        "KIND_GPU" if gpu else "KIND_CPU",
        MAX_BATCH,
        input_name,
        output_name,
    )


def engine_model(name: str, precision: str, *, max_batch: int, input_name: str, output_name: str) -> TritonModel:
    """The TensorRT model for an engine built from a graph of `precision` (the strongly typed builder keeps the
    graph's own I/O type: fp16 for the fp16 graph), named <name>_trt."""
    data_type = "TYPE_FP16" if precision == "fp16" else "TYPE_FP32"
    return TritonModel(f"{name}_trt", "tensorrt", data_type, "KIND_GPU", max_batch, input_name, output_name)
