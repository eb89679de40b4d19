"""One request through the single pipeline vdsr-run uses, with a request body as its source and the response as its
sink (vdsr.runtime.encoded: decoded with the same decoders-only rule and checks as a file, the result checked
against its format before any work, upscaled, encoded with the ICC profile and EXIF kept). Only `network` differs:
the service passes one that joins the windows of concurrent requests into shared backend calls.

Runs on a worker thread of the replica (never on its event loop): everything here blocks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vdsr.errors import BackendError, UsageError, first_line
from vdsr.runtime.batching import Concat
from vdsr.runtime.encoded import upscale_encoded
from vdsr.runtime.resize import output_shape_for
from vdsr.runtime.serve.limits import CONTENT_TYPES, Ask, Limits, Pace
from vdsr.runtime.tiling import Network, network_pixels
from vdsr.runtime.upscaler import Upscaler

SOURCE = "request body"  # how errors name the image: it has no file name


class Cancelled(Exception):
    """The request's time ran out while it was being upscaled: its remaining windows are not computed (the answer,
    504, has already gone)."""


@dataclass(frozen=True)
class Upscaled:
    """The encoded result and what the response says of it."""

    data: bytes
    content_type: str
    pixels: int  # output pixels (for the metrics and the load generator's MP/s)
    warnings: tuple[str, ...] = ()  # what the result leaves out: the X-VDSR-Warning header


def upscale_body(
    body: bytes, ask: Ask, upscaler: Upscaler, *, network: Network, limits: Limits, cancel: threading.Event
) -> Upscaled:
    """`body` (an image file's bytes) upscaled as `ask` says and encoded (vdsr.runtime.encoded). ImageError: it
    cannot be decoded, is over the pixel limits, or its result does not fit the format; UsageError: an empty body;
    BackendError: the backend failed; Cancelled: `cancel` was set before the last window ran."""
    if not body:
        raise UsageError("empty body: send the image file's bytes as the body of POST /upscale")

    def checked(windows: Any) -> Any:  # the deadline is looked at before each call: a late request stops computing
        if cancel.is_set():
            raise Cancelled()
        return network(windows)

    pixel_limits = (limits.max_pixels, limits.max_output_pixels)
    done = upscale_encoded(
        body, ask.scale, upscaler=upscaler, fmt=ask.fmt, limits=pixel_limits, name=SOURCE, network=checked
    )
    return Upscaled(done.data, CONTENT_TYPES[done.fmt], done.pixels, done.warnings)


TIMED_SIDE = 512  # time_backend's result is one tile of at most this side (at least the engine's smallest window)


def time_backend(upscaler: Upscaler) -> Pace:
    """The pace of `upscaler`: a gray image whose result is one tile, upscaled twice at the model's first scale and
    the second run timed (the first pays for allocations). A replica's pace before any request."""
    backend = upscaler.backend
    side = max(min(upscaler.tile, TIMED_SIDE), *backend.min_input[1:])
    scale = backend.scales[0] if backend.scales else 2.0
    n = max(1, int(side // scale))
    image = np.zeros((n, n), np.float32)
    upscaler.upscale(image, scale)
    start = time.perf_counter()
    upscaler.upscale(image, scale)
    seconds = time.perf_counter() - start
    return Pace(seconds, network_pixels(output_shape_for((n, n), scale), upscaler.tile, backend.halo))


def concat_for(upscaler: Upscaler) -> Concat:
    """How windows of this backend's arrays are joined: numpy arrays, or torch tensors on the device."""
    if upscaler.backend.arrays == "numpy":
        return np.concatenate
    import torch  # a backend on torch tensors: torch is loaded

    cat: Callable[[list[Any]], Any] = torch.cat
    return cat


def run_backend(upscaler: Upscaler, windows: Any) -> Any:
    """The backend on joined windows, `upscaler.batch` at a time (its preferred batch, or the one asked); torch's
    runtime errors on the device (out of memory, a lost device) as BackendError, as Upscaler does."""
    backend, size = upscaler.backend, upscaler.batch
    try:
        parts = [backend.run(windows[first : first + size]) for first in range(0, len(windows), size)]
        if backend.arrays == "torch" and backend.device != "cpu":  # done, not only queued: the pace times this call
            import torch

            torch.cuda.synchronize(backend.device)
    except BackendError:
        raise
    except RuntimeError as error:
        raise BackendError(f"{backend.name} on {backend.device}: {first_line(error)}") from error
    return parts[0] if len(parts) == 1 else concat_for(upscaler)(parts)
