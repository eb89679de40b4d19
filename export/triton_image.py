"""The image model's model.py: Triton's Python backend runs vdsr's own pipeline around the graph beside it, so clients
send image files and get image files back, never Y planes.

`vdsr-export ... --triton-repo DIR --triton-image` copies this file to DIR/<name>_image/1/model.py beside the graph
(1/model.onnx). Per request: input `image` (TYPE_STRING: the file's bytes), `scale` (TYPE_FP32, 1 < s <= 8), the
optional `format` (TYPE_STRING: png, jpg, webp, tif, tga, bmp or ppm; default the input's own, a GIF's as PNG);
output `image` (the result file's bytes). The steps are vdsr-run's: decode_image (its decoders only, its pixel
limit), fit_format (the result's size and alpha checked before any work), Upscaler.upscale_file, encode_image with
the ICC profile and EXIF kept. A request that cannot be done gets its own error (TritonError, one line: the cause);
the model goes on serving the others.

The config's parameters set the Upscaler: backend (onnxruntime-cpu, onnxruntime-cuda on GPU instances), cpu_threads,
and the limits max_pixels and max_output_pixels. The graph runs as it is (its own precision).

Nothing in the package imports this module: it runs in Triton's Python stub, whose interpreter needs vdsr, numpy,
onnxruntime (onnxruntime-gpu for GPU instances) and Pillow. nvidia-pytriton 0.7.0's stub (Triton 2.51) was built
against NumPy 1's C API: under NumPy 2 it misreads every tensor (a BYTES input reads as its first byte repeated),
so its Python needs numpy<2.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from vdsr.errors import BackendError, ImageError, UsageError, first_line
from vdsr.runtime.encoded import upscale_encoded
from vdsr.runtime.images import DEFAULT_MAX_PIXELS, output_format
from vdsr.runtime.pipeline import DEFAULT_MAX_OUTPUT_PIXELS
from vdsr.runtime.upscaler import Upscaler

# The stub's own module, there only inside Triton: imported by name, so type checkers need nothing of it
pb_utils: Any = importlib.import_module("triton_python_backend_utils")
SHOWN = "image"  # how errors name the request's file: its input's name


class TritonPythonModel:
    """The model Triton's Python backend loads: one Upscaler per instance (a process), closed on unload."""

    def initialize(self, args: dict[str, str]) -> None:
        parameters = json.loads(args["model_config"]).get("parameters", {})
        setting = {key: str(value["string_value"]) for key, value in parameters.items()}
        gpu = args["model_instance_kind"] == "GPU"
        graph = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.limits = (
            int(setting.get("max_pixels", DEFAULT_MAX_PIXELS)),
            int(setting.get("max_output_pixels", DEFAULT_MAX_OUTPUT_PIXELS)),
        )
        self.upscaler = Upscaler(
            graph,
            setting.get("backend", "auto"),
            device=f"cuda:{args['model_instance_device_id']}" if gpu else "cpu",
            cpu_threads=int(setting.get("cpu_threads", "0")),
            log=pb_utils.Logger.log_info,
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._respond(request) for request in requests]

    def _respond(self, request: Any) -> Any:
        """The response to one request: the result file, or the error that request gets (the others go on)."""
        try:
            data = _one(request, "image")
            scale = float(_one(request, "scale"))
            given = pb_utils.get_input_tensor_by_name(request, "format")
            requested = None if given is None else _one(request, "format").decode("ascii", "replace").lower()
            fmt = None if requested is None else _asked_format(requested)
            done = upscale_encoded(data, scale, upscaler=self.upscaler, fmt=fmt, limits=self.limits, name=SHOWN)
        except (ImageError, UsageError, BackendError) as error:
            return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(first_line(error)))
        except MemoryError:
            cause = str(ImageError(SHOWN, "not enough memory to upscale it"))
            return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(cause))
        output = pb_utils.Tensor("image", np.array([done.data], dtype=np.object_))
        return pb_utils.InferenceResponse(output_tensors=[output])

    def finalize(self) -> None:
        self.upscaler.close()


def _one(request: Any, name: str) -> Any:
    """The one element of input `name` (dims [1]); UsageError if the request sent another shape."""
    values = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
    if values.size != 1:
        raise UsageError(f"{name}: expected one value, got shape {list(values.shape)}")
    return values.reshape(-1)[0]


def _asked_format(requested: str) -> str:
    """Pillow's name of a format asked by its suffix (png, jpg, ...); UsageError for one that is not written."""
    if not requested.isalnum():
        raise UsageError(f"format: expected a suffix such as png or jpg, got {requested[:20]!r}")
    return output_format(PurePath(f"{SHOWN}.{requested}"))
