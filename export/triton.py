"""A Triton Inference Server model repository: one exported graph as a model Triton serves, beside its config.

    DIR/<name>/config.pbtxt       onnxruntime backend; input "ilr", output "sr": [N, 1, H, W], N up to MAX_BATCH, H
    DIR/<name>/1/model.onnx       and W dynamic; fp32/int8 graphs on CPU instances, the fp16 graph on GPU ones with
                                  ONNX Runtime's TensorRT accelerator (FP16)
    DIR/<name>_trt/config.pbtxt   with an engine: tensorrt backend, batch and sizes bounded by the engine's profile
    DIR/<name>_trt/1/model.plan
    DIR/<name>_image/...          with image=True: files in, files out (python backend, vdsr.export.triton_image)

Version 1 only (version_policy), so an older version folder left in DIR/<name> is never served instead. The
configs are Triton's ModelConfig protobuf in text form (tests parse them with tritonclient's model_config_pb2); each
is parsed back before it is written (vdsr.export.pbtxt), and a model's name is one that makes a folder inside DIR.
The image model is served by the tritonserver of nvidia-pytriton in the tests; the onnxruntime and tensorrt models
need a Triton with those backends (NGC's containers) and have not been served here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vdsr.errors import ModelError, UsageError
from vdsr.export.pbtxt import Constant, Message, Value, check_message, render
from vdsr.files import atomic_write_bytes, atomic_write_text
from vdsr.runtime.backends.specs import CPU_BATCH, GPU_BATCH
from vdsr.runtime.images import DEFAULT_MAX_PIXELS
from vdsr.runtime.pipeline import DEFAULT_MAX_OUTPUT_PIXELS

MAX_BATCH = 8  # requests of the same size Triton's dynamic batcher may stack into one call
# Triton's dynamic batcher stacks only requests of one shape: vdsr-run's windows (DEFAULT_TILE + 2 x halo a side, all
# but the edge ones) are. A GPU is filled by GPU_BATCH windows a call (the runtime's own batch), so that and
# MAX_BATCH are preferred; a request waits at most GPU_QUEUE_DELAY_US for others, small beside one call on a batch of
# 552 x 552 windows. Two instances a GPU: one's copies and queueing overlap the other's compute. A CPU gains nothing
# from larger batches (CPU_BATCH: they only cost memory) and ONNX Runtime spreads one call over every core, so one
# instance that never waits.
GPU_QUEUE_DELAY_US = 2000
GPU_INSTANCES = 2
TRT_WORKSPACE_BYTES = 1 << 30  # the TensorRT builder's scratch memory (the ONNX Runtime backend's default, stated)
IMAGE = "_image"  # the image model's name: <name>_image
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
    """What config.pbtxt says: dims exclude the batch, which Triton adds (max_batch_size > 0); -1 is a dynamic size.
    Instances and batching as MAX_BATCH's comment says; ONNX Runtime on GPUs asks for its TensorRT accelerator, in
    the graph's own precision (FP16 for the fp16 graph)."""

    def tensor(name: str) -> Message:
        return {"name": name, "data_type": Constant(model.data_type), "dims": [1, -1, -1]}

    gpu = model.kind == "KIND_GPU"
    preferred = sorted({min(GPU_BATCH, model.max_batch), model.max_batch}) if gpu else [CPU_BATCH]
    fields: Message = {
        "name": model.name,
        "backend": model.backend,
        "max_batch_size": model.max_batch,
        "input": [tensor(model.input_name)],
        "output": [tensor(model.output_name)],
        "instance_group": [{"count": GPU_INSTANCES if gpu else 1, "kind": Constant(model.kind)}],
        "dynamic_batching": {
            "preferred_batch_size": list[Value](preferred),
            "max_queue_delay_microseconds": GPU_QUEUE_DELAY_US if gpu else 0,
        },
        "version_policy": {"specific": {"versions": [int(VERSION)]}},
    }
    if gpu and model.backend == "onnxruntime":
        precision = "FP16" if model.data_type == "TYPE_FP16" else "FP32"
        settings = {"precision_mode": precision, "max_workspace_size_bytes": str(TRT_WORKSPACE_BYTES)}
        tensorrt: Message = {"name": "tensorrt", "parameters": [{"key": k, "value": v} for k, v in settings.items()]}
        fields["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [tensorrt]}}
    return fields


def model_config(model: TritonModel) -> str:
    """config.pbtxt's text."""
    return render(config_fields(model))


def write_model(repository: Path, model: TritonModel, artifact: Path) -> Path:
    """DIR/<name>/config.pbtxt, then DIR/<name>/1/model.* (the graph or engine copied), each file written atomically
    (a folder left without its model fails to load rather than loading Triton's guesses); returns the model's
    folder. The config is parsed back before it is written and as it was written: ModelError if it does not say
    what was meant, or if the folder cannot be written; UsageError for a name model_folder() refuses."""
    folder = model_folder(repository, model.name)
    return _write_folder(folder, config_fields(model), {model.file: artifact})


def _write_folder(folder: Path, meant: Message, files: dict[str, Path]) -> Path:
    """config.pbtxt saying `meant` (checked before and after it is written), then each file copied into the version
    folder under its name, atomically."""
    config = folder / "config.pbtxt"
    check_message(render(meant), meant, where=config)
    try:
        atomic_write_text(config, render(meant))
        check_message(config.read_text(encoding="utf-8"), meant, where=config)
        for name, source in files.items():
            atomic_write_bytes(folder / VERSION / name, source.read_bytes())
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


def image_model_fields(name: str, *, kind: str, settings: dict[str, str]) -> Message:
    """config.pbtxt of the image model (python backend): `image` (the file's bytes) and `scale` in, the optional
    `format` (png, jpg, webp, tif, tga, bmp, ppm; default the input's, a GIF's as PNG), `image` (the result file's
    bytes) out; one request one image (max_batch_size 0: each request is a whole file, tiles are batched inside).
    `settings` are the model's parameters (backend, cpu_threads, max_pixels, max_output_pixels)."""

    def tensor(tensor_name: str, data_type: str, *, optional: bool = False) -> Message:
        fields: Message = {"name": tensor_name, "data_type": Constant(data_type), "dims": [1]}
        return fields | ({"optional": Constant("true")} if optional else {})

    return {
        "name": name,
        "backend": "python",
        "max_batch_size": 0,
        "input": [
            tensor("image", "TYPE_STRING"),
            tensor("scale", "TYPE_FP32"),
            tensor("format", "TYPE_STRING", optional=True),
        ],
        "output": [tensor("image", "TYPE_STRING")],
        # each instance is a process holding its own graph: one on a CPU (ONNX Runtime uses every core), two a GPU
        # (one decodes and encodes on the CPU while the other runs)
        "instance_group": [{"count": GPU_INSTANCES if kind == "KIND_GPU" else 1, "kind": Constant(kind)}],
        "parameters": [{"key": k, "value": {"string_value": v}} for k, v in settings.items()],
        "version_policy": {"specific": {"versions": [int(VERSION)]}},
    }


def image_settings(precision: str) -> tuple[str, dict[str, str]]:
    """The image model's instance kind and parameters for a graph of `precision`: the fp16 graph on GPUs with ONNX
    Runtime's CUDA provider, the others on CPUs; vdsr-run's default limits."""
    gpu = precision == "fp16"
    settings = {
        "backend": "onnxruntime-cuda" if gpu else "onnxruntime-cpu",
        "cpu_threads": "0",
        "max_pixels": str(DEFAULT_MAX_PIXELS),
        "max_output_pixels": str(DEFAULT_MAX_OUTPUT_PIXELS),
    }
    return ("KIND_GPU" if gpu else "KIND_CPU"), settings


def write_image_model(repository: Path, name: str, *, graph: Path, precision: str) -> Path:
    """DIR/<name>_image: config.pbtxt, then 1/model.onnx (the graph) and 1/model.py (vdsr.export.triton_image's
    source, which runs vdsr's pipeline around it in Triton's Python backend), each written atomically; returns the
    folder. Errors as write_model's."""
    folder = model_folder(repository, name + IMAGE)
    kind, settings = image_settings(precision)
    # model.py is the module's file, never imported here: it imports triton_python_backend_utils, which only Triton has
    files = {"model.onnx": graph, "model.py": Path(__file__).with_name("triton_image.py")}
    return _write_folder(folder, image_model_fields(folder.name, kind=kind, settings=settings), files)
