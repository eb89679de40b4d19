"""A Triton Inference Server model repository: one exported graph as a model Triton serves, beside its config.

    DIR/<name>/config.pbtxt       onnxruntime backend; input "ilr", output "sr": [N, 1, H, W], N up to MAX_BATCH, H
    DIR/<name>/1/model.onnx       and W dynamic; fp32/int8 graphs on CPU instances, the fp16 graph on GPU ones
    DIR/<name>_trt/config.pbtxt   with an engine: tensorrt backend, batch and sizes bounded by the engine's profile
    DIR/<name>_trt/1/model.plan

Version 1 only (version_policy), so an older version folder left in DIR/<name> is never served instead. The
configs are Triton's ModelConfig protobuf in text form (tests parse them with tritonclient's model_config_pb2); each
is parsed back before it is written (vdsr.export.pbtxt), and a model's name is one that makes a folder inside DIR.
Triton itself cannot be installed in this project's environment: the repository has not been served here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vdsr.errors import ModelError, UsageError
from vdsr.export.pbtxt import Constant, Message, check_message, render
from vdsr.files import atomic_write_bytes, atomic_write_text

MAX_BATCH = 8  # requests of the same size Triton's dynamic batcher may stack into one call
VERSION = "1"
# Triton names a model by its folder and puts the name in URLs and metrics: a conservative name is a portable folder
# name, never "." or ".." (the engine's <name>_trt keeps the rule too)
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
NAME_RULE = "letters, digits, '_', '.' and '-', not starting with '.' or '-', at most 100 characters"


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


def check_name(name: str) -> str:
    """`name` if it can name a Triton model (and its folder); UsageError naming it and the rule otherwise."""
    if not NAME.fullmatch(name):
        raise UsageError(f"{name!r} cannot name a Triton model: use {NAME_RULE}")
    return name


def model_folder(repository: Path, name: str) -> Path:
    """DIR/<name>, for a name check_name() allows; UsageError if it or a file written in it would resolve outside
    DIR (a link on the way)."""
    folder = repository / check_name(name)
    inside = repository.resolve()
    for path in (folder, folder / "config.pbtxt", folder / VERSION, *(folder / VERSION).glob("model.*")):
        if not path.resolve().is_relative_to(inside):
            raise UsageError(f"{path} resolves to {path.resolve()}, outside the Triton repository {repository}")
    return folder


def config_fields(model: TritonModel) -> Message:
    """What config.pbtxt says: dims exclude the batch, which Triton adds (max_batch_size > 0); -1 is a dynamic size."""

    def tensor(name: str) -> Message:
        return {"name": name, "data_type": Constant(model.data_type), "dims": [1, -1, -1]}

    return {
        "name": model.name,
        "backend": model.backend,
        "max_batch_size": model.max_batch,
        "input": [tensor(model.input_name)],
        "output": [tensor(model.output_name)],
        "instance_group": [{"count": 1, "kind": Constant(model.kind)}],
        "dynamic_batching": {},
        "version_policy": {"specific": {"versions": [int(VERSION)]}},
    }


def model_config(model: TritonModel) -> str:
    """config.pbtxt's text."""
    return render(config_fields(model))


def write_model(repository: Path, model: TritonModel, artifact: Path) -> Path:
    """DIR/<name>/config.pbtxt, then DIR/<name>/1/model.* (the graph or engine copied), each file written atomically
    (a folder left without its model fails to load rather than loading Triton's guesses); returns the model's
    folder. The config is parsed back before it is written and as it was written: ModelError if it does not say
    what was meant, or if the folder cannot be written; UsageError for a name model_folder() refuses."""
    folder = model_folder(repository, model.name)
    config, meant = folder / "config.pbtxt", config_fields(model)
    check_message(render(meant), meant, where=config)
    try:
        atomic_write_text(config, render(meant))
        check_message(config.read_text(encoding="utf-8"), meant, where=config)
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
