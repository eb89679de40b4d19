"""Videos: a source of frames and a sink that muxes them, around the upscaler's network (PyAV: the `video` extra).

    vdsr-run clip.mp4 -s 2             # -> clip_x2.mp4: every frame with its timestamp; audio, subtitles copied
    upscaler.upscale_video("clip.mp4", "big.mkv", 2, VideoSettings(codec="ffv1"))

Native to VDSR: the network runs on the decoded luma plane at the source's bit depth (8 to 16 bits; planar YUV or
gray formats, semi-planar NV12/P010 unpacked to their planar forms first, losslessly); chroma (and alpha) planes are
resized with the same MATLAB bicubic; there is no RGB round trip, and the colour metadata (matrix, primaries,
transfer, range) is the source's. Studio-range luma is what the network was trained on (Y of BT.601 in [0, 1] is
code / (255 x 2^(bits - 8))); full-range luma is mapped into it and back.

Frame-exact: each decoded frame gives one output frame with its timestamp (variable frame rates kept); audio,
subtitle and data streams are copied packet for packet, never re-encoded, where the output container can hold them
(one that cannot fails the video, naming the stream). The result is ceil(scale x size) as for images, rounded down
to what the pixel format's chroma subsampling divides (4:2:0: even width and height): at most one row or column less.

Decoding, the network and encoding overlap: a thread demuxes and decodes ahead, another encodes and muxes, each at
most IN_FLIGHT frames from the network. Untrusted files: only the container formats of VIDEO_FORMATS are opened, from
the local file only: no playlists (HLS, concat) that would read other files or the network, no image demuxers.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from vdsr.errors import ImageError, UsageError, first_line
from vdsr.files import atomic_write
from vdsr.runtime.images import IMAGE_SUFFIXES
from vdsr.runtime.picture import Y_OFFSET, Y_RANGE
from vdsr.runtime.resize import imresize, output_shape_for

# suffix -> (FFmpeg muxer, default video encoder, its quality options)
VIDEO_FORMATS: dict[str, tuple[str, str]] = {
    ".mp4": ("mp4", "libx264"),
    ".m4v": ("mp4", "libx264"),
    ".mov": ("mov", "libx264"),
    ".mkv": ("matroska", "ffv1"),  # lossless
    ".webm": ("webm", "libvpx-vp9"),
    ".avi": ("avi", "ffv1"),
    ".ts": ("mpegts", "libx264"),
    ".flv": ("flv", "libx264"),
}
VIDEO_SUFFIXES = tuple(VIDEO_FORMATS)
INPUT_SUFFIXES = IMAGE_SUFFIXES + VIDEO_SUFFIXES  # what a folder run picks up
DEMUXERS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,flv"  # what an input may be: containers, no playlists
DEFAULT_CRF = 18  # the quality of CRF_ENCODERS when --crf is not given: visually lossless for most sources
CRF_ENCODERS = ("libx264", "libx265", "libvpx", "libvpx-vp9", "libsvtav1")  # the encoders --crf is for
IN_FLIGHT = 8  # frames decoded ahead of the network, and upscaled frames waiting for the encoder
SEMI_PLANAR = {"nv12": "yuv420p", "nv21": "yuv420p", "nv16": "yuv422p", "nv24": "yuv444p", "p010le": "yuv420p10le"}
SEMI_PLANAR |= {"p016le": "yuv420p16le", "p210le": "yuv422p10le", "p410le": "yuv444p10le"}
JPEG_RANGE = 2  # AVCOL_RANGE_JPEG: full-range luma


@dataclass(frozen=True)
class VideoSettings:
    """The encoder of the upscaled video stream: FFmpeg's encoder name (None: by the output's suffix, VIDEO_FORMATS),
    its constant-rate factor for encoders that take one (None: DEFAULT_CRF), its pixel format (None: the source's, or
    the encoder's closest of the same bit depth)."""

    codec: str | None = None
    crf: int | None = None
    pix_fmt: str | None = None


@dataclass(frozen=True)
class VideoResult:
    frames: int
    width: int
    height: int
    copied: int  # audio, subtitle and data packets copied


Lumas = Callable[[list[NDArray[np.float32]]], list[NDArray[np.float32] | ImageError]]  # the network on luma planes


def is_video(path: Path | str) -> bool:
    return Path(str(path)).suffix.lower() in VIDEO_FORMATS


def import_av() -> Any:
    """PyAV, or a UsageError saying which extra brings it."""
    try:
        import av
    except ImportError:
        raise UsageError('videos need PyAV: pip install "vdsr[video]"') from None
    av.logging.set_level(av.logging.PANIC)  # FFmpeg's own lines would break the one-line-per-file rule
    return av


def check_settings(settings: VideoSettings, codec: str = "libx264") -> Any:
    """The encoder `settings` name (or `codec`); UsageError for one that is not a video encoder here, or --crf given
    to one that does not take it. Checked before any work."""
    av = import_av()
    name = settings.codec or codec
    try:
        encoder = av.codec.Codec(name, "w")
    except (av.FFmpegError, ValueError) as error:
        raise UsageError(f"--codec {name}: not an encoder here ({_cause(error)})") from None
    if encoder.type != "video":
        raise UsageError(f"--codec {name}: not a video encoder")
    if settings.crf is not None and encoder.name not in CRF_ENCODERS:
        raise UsageError(f"--crf is for {', '.join(CRF_ENCODERS)}; {encoder.name} does not take it")
    if settings.pix_fmt is not None:
        try:
            av.VideoFormat(settings.pix_fmt)
        except (av.FFmpegError, ValueError) as error:
            raise UsageError(f"--pix-fmt {settings.pix_fmt}: not a pixel format ({_cause(error)})") from None
    return encoder


def upscale_video(
    source: Path,
    target: Path,
    scale: float,
    lumas: Lumas,
    *,
    settings: VideoSettings = VideoSettings(),
    group: int = 1,
    max_pixels: int,
    max_output_pixels: int,
    on_frame: Callable[[int, int | None], None] = lambda done, total: None,
) -> VideoResult:
    """`source` upscaled into `target` (written whole, or not at all), `lumas` running the network on `group` frames'
    luma planes at a time. ImageError naming `source` for a file that cannot be read, decoded or written as asked;
    UsageError for settings no video could take. `on_frame(frames done, frames the header promises or None)`."""
    av = import_av()
    muxer, default_codec = VIDEO_FORMATS.get(target.suffix.lower(), (None, ""))
    if muxer is None:
        raise UsageError(f"{target}: a video is written as {', '.join(VIDEO_FORMATS)}")
    encoder = check_settings(settings, default_codec)
    try:
        inp = av.open(str(source), options={"format_whitelist": DEMUXERS, "protocol_whitelist": "file"})
    except (av.FFmpegError, UnicodeDecodeError) as error:
        raise ImageError(source, f"not a video this toolkit reads ({_cause(error)})") from None
    with inp:
        if not inp.streams.video:
            raise ImageError(source, "no video stream")
        stream = inp.streams.video[0]
        if stream.codec_context is None:
            raise ImageError(source, "its video codec has no decoder here")
        width, height = stream.codec_context.width, stream.codec_context.height
        if not 0 < width * height <= max_pixels:
            raise ImageError(
                source, f"{width}x{height} frames: not a size this toolkit takes ({max_pixels} pixels at most)"
            )
        out_h, out_w = output_shape_for((height, width), scale)
        if out_h * out_w > max_output_pixels:
            raise ImageError(
                source, f"the {out_w}x{out_h} frames are over the limit of {max_output_pixels} output pixels"
            )
        stream.thread_type = "AUTO"
        job = _Job(av, inp, stream, source=source, scale=scale, encoder=encoder, muxer=muxer, settings=settings)
        try:
            atomic_write(target, lambda file: job.run(file, lumas, group=group, on_frame=on_frame))
        except av.FFmpegError as error:
            raise ImageError(source, f"cannot be upscaled ({_cause(error)})") from None
    return VideoResult(job.frames, job.size[1], job.size[0], job.copied)


def _cause(error: BaseException) -> str:
    return " ".join(first_line(error).split())[:200]


def _put(items: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put `item`, waiting while the queue is full, unless `stop` is set meanwhile (False then)."""
    while not stop.is_set():
        try:
            items.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


@dataclass(frozen=True)
class _Planes:
    """A frame's planes as arrays (luma first), its pixel format, and the frame they came from (timestamps,
    colour metadata)."""

    planes: list[NDArray[Any]]
    fmt: Any  # av.VideoFormat
    frame: Any  # av.VideoFrame


class _Job:
    """One video: a reader thread demuxes and decodes, the caller's thread runs the network, a writer thread encodes
    and muxes; frames and copied packets pass through bounded queues."""

    def __init__(
        self,
        av: Any,
        inp: Any,
        stream: Any,
        *,
        source: Path,
        scale: float,
        encoder: Any,
        muxer: str,
        settings: VideoSettings,
    ) -> None:
        self.av, self.inp, self.stream, self.source, self.scale = av, inp, stream, source, scale
        self.encoder, self.muxer, self.settings = encoder, muxer, settings
        self.copies = [s for s in inp.streams if s is not stream and s.type in ("audio", "subtitle", "data")]
        self.frames = self.copied = 0
        self.size = (0, 0)
        self.stop = threading.Event()

    def run(self, file: BinaryIO, lumas: Lumas, *, group: int, on_frame: Callable[[int, int | None], None]) -> None:
        decoded: queue.Queue[tuple[str, Any]] = queue.Queue(IN_FLIGHT)
        encoded: queue.Queue[tuple[str, Any]] = queue.Queue(IN_FLIGHT)
        threads = [threading.Thread(target=self._read, args=(decoded,), daemon=True)]
        threads[0].start()
        out = self.av.open(file, "w", format=self.muxer)
        errors: list[BaseException] = []
        closed = False
        waiting: list[Any] = []  # packets before the first frame: the streams are added once its format is known
        batch: list[_Planes] = []
        expected = self.stream.frames or None
        try:
            while True:
                kind, item = decoded.get()
                if kind == "error":
                    raise item
                if kind == "packet":
                    if len(threads) == 1:
                        waiting.append(item)
                    elif not _put(encoded, ("packet", item), self.stop):
                        break
                    continue
                if kind == "frame" and len(threads) == 1:
                    vout, copies = self._streams(out, item)
                    threads.append(
                        threading.Thread(target=self._write, args=(out, vout, copies, encoded, errors), daemon=True)
                    )
                    threads[1].start()
                    for packet in waiting:
                        _put(encoded, ("packet", packet), self.stop)
                if kind == "frame":
                    batch.append(self._planes(item))
                if batch and (kind == "end" or len(batch) >= group):
                    for frame in self._upscale(batch, lumas, vout):
                        if not _put(encoded, ("frame", frame), self.stop):
                            break
                        self.frames += 1
                        on_frame(self.frames, expected)
                    batch = []
                if kind == "end" or errors:
                    break
            if self.frames == 0 and not errors:
                raise ImageError(self.source, "no frames")
            if expected and self.frames < expected and not errors:
                raise ImageError(self.source, f"truncated or damaged: {self.frames} of its {expected} frames decode")
            _put(encoded, ("end", None), self.stop)
            threads[-1].join()
            if errors:
                raise errors[0]
            out.close()
            closed = True
        finally:  # both threads end (they look at `stop`) before the containers close
            self.stop.set()
            for thread in threads:
                thread.join(timeout=60)
            if not closed:
                with contextlib.suppress(Exception):  # a failed video: its temporary file is removed anyway
                    out.close()

    def _read(self, decoded: queue.Queue[tuple[str, Any]]) -> None:
        """The reader thread: frames and the packets to copy, in the file's order, then ("end", None)."""
        try:
            for packet in self.inp.demux(self.stream, *self.copies):
                if packet.stream is self.stream:
                    for frame in packet.decode():
                        if frame.is_corrupt:
                            raise ImageError(self.source, f"damaged frame at {frame.time or 0:.3f} s")
                        if not _put(decoded, ("frame", frame), self.stop):
                            return
                elif packet.size and not _put(decoded, ("packet", packet), self.stop):
                    return
            _put(decoded, ("end", None), self.stop)
        except self.av.FFmpegError as error:
            _put(decoded, ("error", ImageError(self.source, f"cannot be decoded ({_cause(error)})")), self.stop)
        except BaseException as error:  # noqa: BLE001  (handed to the caller's thread, which raises it)
            _put(decoded, ("error", error), self.stop)

    def _write(
        self,
        out: Any,
        vout: Any,
        copies: dict[int, Any],
        encoded: queue.Queue[tuple[str, Any]],
        errors: list[BaseException],
    ) -> None:
        """The writer thread: frames encoded and muxed, packets muxed as they are, then the encoder flushed."""
        try:
            while True:
                try:
                    kind, item = encoded.get(timeout=0.1)
                except queue.Empty:
                    if self.stop.is_set():  # the caller's thread failed or was interrupted
                        return
                    continue
                if kind == "end":
                    out.mux(vout.encode(None))
                    return
                if kind == "frame":
                    out.mux(vout.encode(item))
                else:
                    item.stream = copies[item.stream_index]
                    out.mux(item)
                    self.copied += 1
        except BaseException as error:  # noqa: BLE001  (handed to the caller's thread, which raises it)
            errors.append(error)
            self.stop.set()

    def _streams(self, out: Any, first: Any) -> tuple[Any, dict[int, Any]]:
        """The output's video stream, set from the first frame, and a copy of each stream to copy."""
        fmt = _planar(first.format, self.source)
        height, width = output_shape_for((first.height, first.width), self.scale)
        step_w = round(100 / fmt.chroma_width(100)) if fmt.chroma_width(100) else 1
        step_h = round(100 / fmt.chroma_height(100)) if fmt.chroma_height(100) else 1
        self.size = (height - height % step_h, width - width % step_w)
        vout = out.add_stream(self.encoder.name, rate=self.stream.average_rate or self.stream.guessed_rate)
        vout.width, vout.height = self.size[1], self.size[0]
        vout.pix_fmt = self._pix_fmt(fmt)
        vout.time_base = self.stream.time_base
        vout.codec_context.time_base = self.stream.time_base
        for name in ("color_range", "colorspace", "color_primaries", "color_trc"):
            setattr(vout.codec_context, name, getattr(first, name))
        if self.encoder.name in CRF_ENCODERS:
            crf = self.settings.crf if self.settings.crf is not None else DEFAULT_CRF
            vout.options = {"crf": str(crf)} | ({"b": "0"} if "vpx" in self.encoder.name else {})  # VP9: quality only
        if first.rotation:  # the display matrix: how a player turns the picture
            vout.set_display_rotation(first.rotation)
        vout.metadata.update(self.stream.metadata)
        out.metadata.update(self.inp.metadata)
        copies = {}
        for stream in self.copies:
            try:
                copies[stream.index] = out.add_stream_from_template(stream)
            except (self.av.FFmpegError, ValueError) as error:
                raise ImageError(
                    self.source,
                    f"its {stream.type} stream {stream.index} ({stream.codec_context.name}) cannot go into "
                    f"{self.muxer} ({_cause(error)})",
                ) from None
        return vout, copies

    def _pix_fmt(self, fmt: Any) -> str:
        """The encoder's pixel format: --pix-fmt, else the source's, else the encoder's closest of its bit depth."""
        if self.settings.pix_fmt:
            return self.settings.pix_fmt
        offered = [f.name for f in self.encoder.video_formats or []]
        if not offered or fmt.name in offered:
            return str(fmt.name)
        bits = fmt.components[0].bits
        same = [
            n
            for n in offered
            if not self.av.VideoFormat(n).is_rgb and self.av.VideoFormat(n).components[0].bits == bits
        ]
        if not same:
            raise ImageError(
                self.source, f"{self.encoder.name} cannot write {bits}-bit video; give --pix-fmt or another --codec"
            )
        chroma = [n for n in same if self.av.VideoFormat(n).chroma_width(100) == fmt.chroma_width(100)]
        return (chroma or same)[0]

    def _planes(self, frame: Any) -> _Planes:
        fmt = _planar(frame.format, self.source)
        if fmt.name != frame.format.name:
            frame = frame.reformat(format=fmt.name)  # semi-planar to planar: the same samples
        dtype = np.uint8 if fmt.components[0].bits <= 8 else np.dtype("<u2")
        planes = []
        for plane in frame.planes:
            rows = np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // np.dtype(dtype).itemsize)
            planes.append(rows[:, : plane.width].copy())
        return _Planes(planes, fmt, frame)

    def _upscale(self, batch: list[_Planes], lumas: Lumas, vout: Any) -> Iterator[Any]:
        """The frames of `batch` upscaled: luma through the network, the other planes resized, as output frames."""
        height, width = self.size
        results = lumas([_to_network(b.planes[0], b.fmt, full=b.frame.color_range == JPEG_RANGE) for b in batch])
        for item, luma in zip(batch, results, strict=True):
            if isinstance(luma, ImageError):
                raise ImageError(self.source, f"frame at {item.frame.time or 0:.3f} s: {luma.cause}")
            fmt, peak = item.fmt, (1 << item.fmt.components[0].bits) - 1
            planes = [_from_network(luma[:height, :width], item.fmt, full=item.frame.color_range == JPEG_RANGE)]
            for component in fmt.components[1:]:
                plane = item.planes[component.plane].astype(np.float32)
                shape = (height, width) if component.is_alpha else (fmt.chroma_height(height), fmt.chroma_width(width))
                resized = imresize(plane, output_shape=shape, dtype=np.float32)
                planes.append(np.clip(np.rint(resized), 0, peak).astype(item.planes[0].dtype))
            frame = self.av.VideoFrame(width, height, fmt.name)
            for plane, data in zip(frame.planes, planes, strict=True):
                rows = np.zeros((plane.height, plane.line_size // data.dtype.itemsize), data.dtype)
                rows[:, : plane.width] = data
                plane.update(rows)
            for name in ("pts", "time_base", "color_range", "colorspace", "color_primaries", "color_trc"):
                setattr(frame, name, getattr(item.frame, name))
            yield frame if vout.pix_fmt == fmt.name else frame.reformat(format=vout.pix_fmt)


def _planar(fmt: Any, source: Path) -> Any:
    """The planar YUV or gray format a frame's samples are taken in; ImageError for any other."""
    import av

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
        raise ImageError(source, f"frames in {fmt.name}: not a YUV or gray format this toolkit upscales")
    return fmt


def _to_network(luma: NDArray[Any], fmt: Any, *, full: bool) -> NDArray[np.float32]:
    """Luma codes -> the network's Y in [0, 1] (BT.601 studio range): code / (255 x 2^(bits - 8)), or full range
    mapped into it."""
    bits = fmt.components[0].bits
    if full:
        return (Y_OFFSET + Y_RANGE * luma.astype(np.float32) / ((1 << bits) - 1)).astype(np.float32)
    return (luma.astype(np.float32) / (255 * 2 ** (bits - 8))).astype(np.float32)


def _from_network(y: NDArray[np.float32], fmt: Any, *, full: bool) -> NDArray[Any]:
    bits = fmt.components[0].bits
    peak = (1 << bits) - 1
    codes = (y - Y_OFFSET) / Y_RANGE * peak if full else y * (255 * 2 ** (bits - 8))
    return np.clip(np.rint(codes), 0, peak).astype(np.uint8 if bits <= 8 else np.dtype("<u2"))
