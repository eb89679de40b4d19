"""A video frame's planes as arrays and back (vdsr.runtime.video): the formats taken, luma to and from the network's
convention, the other planes resized; and what the encoder is given (its pixel format and options).

Taken: planar YUV or gray, 8 to 16 bits little-endian, alpha allowed; semi-planar NV12/NV21/NV16/NV24/P010/P016/P210/
P410 are unpacked to their planar forms first (the same samples). RGB, paletted, Bayer and big-endian frames are
refused. The network's input is Y of BT.601 studio range in [0, 1], as trained: a studio-range code over
255 x 2^(bits - 8); a full-range (JPEG) code is mapped into it and back.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from vdsr.errors import ImageError
from vdsr.runtime.picture import Y_OFFSET, Y_RANGE
from vdsr.runtime.resize import imresize

SEMI_PLANAR = {"nv12": "yuv420p", "nv21": "yuv420p", "nv16": "yuv422p", "nv24": "yuv444p", "p010le": "yuv420p10le"}
SEMI_PLANAR |= {"p016le": "yuv420p16le", "p210le": "yuv422p10le", "p410le": "yuv444p10le"}
JPEG_RANGE = 2  # AVCOL_RANGE_JPEG: full-range luma
COLOUR = ("color_range", "colorspace", "color_primaries", "color_trc")  # what a frame says of its colours


def planar(av: Any, fmt: Any, name: object) -> Any:
    """The planar YUV or gray format a frame's samples are taken in; ImageError naming `name` for any other."""
    fmt = av.VideoFormat(SEMI_PLANAR.get(fmt.name, fmt.name))
    components = fmt.components
    if (
        fmt.is_rgb
        or fmt.has_palette
        or fmt.is_bayer
        or fmt.is_big_endian
        or not components[0].is_luma
        or len({c.plane for c in components}) != len(components)
        or components[0].bits > 16
    ):
        raise ImageError(str(name), f"frames in {fmt.name}: not a YUV or gray format this toolkit upscales")
    return fmt


def sample_type(fmt: Any) -> np.dtype[Any]:
    return np.dtype(np.uint8) if fmt.components[0].bits <= 8 else np.dtype("<u2")


def planes_of(frame: Any, fmt: Any) -> list[NDArray[Any]]:
    """A decoded frame's planes (in `fmt`, planar) as (height, width) arrays of its samples."""
    dtype = sample_type(fmt)
    return [
        np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // dtype.itemsize)[:, : plane.width].copy()
        for plane in frame.planes
    ]


def frame_of(av: Any, planes: list[NDArray[Any]], fmt: Any, *, like: Any) -> Any:
    """A frame of `planes` in `fmt`, with the timestamp, duration and colour metadata of `like`."""
    frame = av.VideoFrame(planes[0].shape[1], planes[0].shape[0], fmt.name)
    for plane, data in zip(frame.planes, planes, strict=True):
        rows = np.zeros((plane.height, plane.line_size // data.dtype.itemsize), data.dtype)
        rows[:, : plane.width] = data
        plane.update(rows)
    for name in ("pts", "time_base", "duration", *COLOUR):  # duration: a held last frame stays held
        setattr(frame, name, getattr(like, name))
    return frame


def to_network(luma: NDArray[Any], fmt: Any, *, full: bool) -> NDArray[np.float32]:
    """Luma codes -> the network's Y in [0, 1] (BT.601 studio range)."""
    bits = fmt.components[0].bits
    codes = luma.astype(np.float32)
    y = Y_OFFSET + Y_RANGE * codes / ((1 << bits) - 1) if full else codes / (255 * 2 ** (bits - 8))
    return np.asarray(y, np.float32)


def from_network(y: NDArray[np.float32], fmt: Any, *, full: bool) -> NDArray[Any]:
    """The network's Y -> luma codes, rounded and clipped to the format's range."""
    bits = fmt.components[0].bits
    peak = (1 << bits) - 1
    codes = (y - Y_OFFSET) / Y_RANGE * peak if full else y * (255 * 2 ** (bits - 8))
    return np.asarray(np.clip(np.rint(codes), 0, peak), sample_type(fmt))


def other_planes(planes: list[NDArray[Any]], fmt: Any, *, full: tuple[int, int], size: tuple[int, int]) -> list[Any]:
    """Chroma and alpha resized by MATLAB bicubic to the planes of a `full`-sized frame (ceil(scale x size)), then
    cut to the planes of the `size` frame written (rounded down to what the subsampling divides): the same cut as
    the luma's, so chroma stays aligned with it."""
    peak = (1 << fmt.components[0].bits) - 1
    out = []
    for component in fmt.components[1:]:
        whole = full if component.is_alpha else (fmt.chroma_height(full[0]), fmt.chroma_width(full[1]))
        kept = size if component.is_alpha else (fmt.chroma_height(size[0]), fmt.chroma_width(size[1]))
        resized = imresize(planes[component.plane].astype(np.float32), output_shape=whole, dtype=np.float32)
        out.append(np.clip(np.rint(resized[: kept[0], : kept[1]]), 0, peak).astype(sample_type(fmt)))
    return out


DEFAULT_CRF = 18  # the quality of CRF_ENCODERS when --crf is not given: visually lossless for most sources
CRF_ENCODERS = ("libx264", "libx265", "libvpx", "libvpx-vp9", "libsvtav1")  # the encoders --crf is for
LOOKAHEAD_BYTES = 512 << 20  # libx264's lookahead frames held at most (its default of 40 is 2 GB of 8K frames)


def encoder_options(encoder: str, crf: int | None, *, frame_bytes: int, frames: int = 0) -> dict[str, str]:
    """The encoder's options: the quality (CRF, DEFAULT_CRF unless given) of encoders that take one, VP9 by quality
    alone; libx264's lookahead shortened for large frames so the frames it holds stay under LOOKAHEAD_BYTES (10 at
    least; 1080p keeps its default of 40); libx265 without B-frames for a clip of `frames` <= 2 (0: not known; with
    them, PyAV 18's libx265 failed one such clip in five to fifteen: a packet without a decoding timestamp)."""
    if encoder not in CRF_ENCODERS:
        return {}
    options = {"crf": str(DEFAULT_CRF if crf is None else crf)}
    if "vpx" in encoder:
        options["b"] = "0"
    if encoder == "libx265":
        short = ":bframes=0" if 0 < frames <= 2 else ""
        options["x265-params"] = "log-level=error" + short  # not its banner and statistics on stderr, mid-run
    if encoder == "libx264":
        options["rc-lookahead"] = str(max(10, min(40, LOOKAHEAD_BYTES // max(frame_bytes, 1))))
    return options


def display_matrix(frame: Any) -> list[int] | None:
    """The display matrix of a decoded frame (FFmpeg's nine int32: how a player rotates and mirrors the picture),
    without its translation, which is in the source's pixels; None for none or the identity."""
    data = frame.side_data.get("DISPLAYMATRIX")
    if data is None:
        return None
    matrix = [int(v) for v in np.frombuffer(bytes(data), "=i4")]
    matrix[6] = matrix[7] = 0
    return None if matrix == [1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30] else matrix


def size_step(*formats: Any) -> tuple[int, int]:
    """The rows and columns a frame's size must be a multiple of for every one of `formats` (its chroma
    subsampling): a 4:4:4 source written as yuv420p takes even sizes."""
    return max(round(100 / f.chroma_height(100)) for f in formats), max(
        round(100 / f.chroma_width(100)) for f in formats
    )


def encoder_format(av: Any, fmt: Any, encoder: Any, *, name: object) -> str:
    """The source's pixel format if the encoder writes it, else the encoder's closest of the same bit depth and
    alpha (the same subsampling first); ImageError naming `name` if it writes none: never a palette, never alpha
    dropped silently (as an image's alpha is refused by a format that cannot hold it)."""
    offered = [str(f.name) for f in encoder.video_formats or []]
    if not offered or fmt.name in offered:
        return str(fmt.name)
    bits, alpha = fmt.components[0].bits, _has_alpha(fmt)
    same = [
        f
        for f in (av.VideoFormat(n) for n in offered)
        if not f.is_rgb and not f.has_palette and f.components[0].bits == bits and _has_alpha(f) == alpha
    ]
    if not same:
        what = f"{bits}-bit video{' with alpha' if alpha else ''}"
        raise ImageError(str(name), f"{encoder.name} cannot write {what}; give --pix-fmt or --codec (ffv1 in .mkv)")
    if sum(not c.is_alpha for c in fmt.components) == 1:  # gray: no chroma to keep, and 4:2:0 plays everywhere
        chroma = [f for f in same if (f.chroma_width(100), f.chroma_height(100)) == (50, 50)]
    else:
        chroma = [f for f in same if f.chroma_width(100) == fmt.chroma_width(100)]
    return str((chroma or same)[0].name)


def _has_alpha(fmt: Any) -> bool:
    return any(component.is_alpha for component in fmt.components)
