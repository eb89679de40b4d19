"""Videos: a source of frames and a sink that muxes them, around the upscaler's network (PyAV: the `video` extra).

    vdsr-run clip.mp4 -s 2             # -> clip_x2.mp4: every frame with its timestamp; audio, subtitles copied
    upscaler.upscale_video("clip.mp4", "big.mkv", 2, settings=VideoSettings(codec="ffv1"))

Native to VDSR: the network runs on the decoded luma plane at the source's bit depth, chroma (and alpha) planes are
resized with the same MATLAB bicubic (vdsr.runtime.video_planes); no RGB round trip; the colour metadata (matrix,
primaries, transfer, range) is the source's.

Frame-exact: each decoded frame gives one output frame with its timestamp (variable frame rates kept); audio,
subtitle and data streams are copied packet for packet, never re-encoded, and attachments (fonts) whole, where the
output container can hold them (one that cannot fails the video, naming the stream: vdsr.runtime.video_streams). The
result is ceil(scale x size) as for images, rounded down to what the pixel format's chroma subsampling divides (4:2:0:
even width and height): at most one row or column less.

Decoding, the network and encoding overlap (threads, each at most IN_FLIGHT frames from the network). Untrusted
files: only VIDEO_FORMATS' containers, from the local regular file only: no playlists, no image demuxers.
"""

from __future__ import annotations

import contextlib
import io
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from vdsr.errors import ImageError, UsageError
from vdsr.files import atomic_write, open_regular
from vdsr.runtime import video_planes, video_streams
from vdsr.runtime.images import IMAGE_SUFFIXES
from vdsr.runtime.picture import check_output
from vdsr.runtime.resize import output_shape_for

VIDEO_FORMATS: dict[str, tuple[str, str]] = {  # suffix -> (FFmpeg muxer, default video encoder)
    ".mp4": ("mp4", "libx264"), ".m4v": ("mp4", "libx264"), ".mov": ("mov", "libx264"), ".ts": ("mpegts", "libx264"),
    ".flv": ("flv", "libx264"), ".mkv": ("matroska", "ffv1"), ".avi": ("avi", "ffv1"), ".webm": ("webm", "libvpx-vp9"),
}  # fmt: skip
VIDEO_SUFFIXES = tuple(VIDEO_FORMATS)
INPUT_SUFFIXES = IMAGE_SUFFIXES + VIDEO_SUFFIXES  # what a folder run picks up
DEMUXERS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,flv"  # what an input may be: containers, no playlists
IN_FLIGHT = 4  # frames decoded ahead of the network, and upscaled frames waiting for the encoder
MAX_WAITING_BYTES = 64 << 20  # packets of other streams held before the first video frame arrives


@dataclass(frozen=True)
class VideoSettings:
    """The encoder of the upscaled video stream: FFmpeg's encoder name (None: by the output's suffix, VIDEO_FORMATS),
    its constant-rate factor for encoders that take one (None: DEFAULT_CRF), its pixel format (None: the source's, or
    the encoder's closest of the same bit depth)."""

    codec: str | None = None
    crf: int | None = None
    pix_fmt: str | None = None

    def __post_init__(self) -> None:
        if self.crf is not None and not (isinstance(self.crf, int) and not isinstance(self.crf, bool)):
            raise UsageError(f"Expected crf as a whole number, got {self.crf!r}")
        if self.crf is not None and not 0 <= self.crf <= 63:
            raise UsageError(f"Expected crf in 0..63, got {self.crf}")


@dataclass(frozen=True)
class VideoResult:
    frames: int
    width: int
    height: int
    copied: int  # audio, subtitle and data packets copied
    not_copied: tuple[str, ...] = ()  # the streams neither upscaled nor copied: "cover picture 2", "video stream 1"


Lumas = Callable[[list[NDArray[np.float32]]], list[NDArray[np.float32] | ImageError]]  # the network on luma planes


def is_video(path: PurePath | str) -> bool:
    return PurePath(str(path)).suffix.lower() in VIDEO_FORMATS


def import_av() -> Any:
    """PyAV, or a UsageError saying which extra brings it."""
    try:
        import av
    except ImportError:
        raise UsageError('videos need PyAV: pip install "vdsr[video]"') from None
    av.logging.set_level(av.logging.PANIC)  # FFmpeg's own lines would break the one-line-per-file rule
    return av


def check_settings(settings: VideoSettings, codec: str = "libx264", muxer: str | None = None) -> Any:
    """The encoder `settings` name (or `codec`); UsageError for one that is not a video encoder here, one the
    `muxer`'s files cannot hold, --crf given to one that does not take it, or a --pix-fmt it does not write. Checked
    before any work."""
    av = import_av()
    name = settings.codec or codec
    try:
        encoder = av.codec.Codec(name, "w")
    except (av.FFmpegError, ValueError) as error:
        raise UsageError(f"--codec {name}: not an encoder here ({video_streams.cause(error)})") from None
    if encoder.type != "video":
        raise UsageError(f"--codec {name}: not a video encoder")
    if muxer is not None:
        with av.open(io.BytesIO(), "w", format=muxer) as probe:  # nothing written: the muxer's own list
            try:
                probe.add_stream(encoder.name)
            except (av.FFmpegError, ValueError) as error:
                raise UsageError(f"--codec {name}: {video_streams.cause(error)}") from None
    if settings.crf is not None and encoder.name not in video_planes.CRF_ENCODERS:
        raise UsageError(f"--crf is for {', '.join(video_planes.CRF_ENCODERS)}; {encoder.name} does not take it")
    offered = [f.name for f in encoder.video_formats or []]
    if settings.pix_fmt is not None and offered and settings.pix_fmt not in offered:
        raise UsageError(f"--pix-fmt {settings.pix_fmt}: {encoder.name} writes {', '.join(offered)}")
    return encoder


def upscale_video(
    source: Path,
    target: Path,
    scale: float,
    *,
    lumas: Lumas,
    settings: VideoSettings,
    group: int = 1,
    max_pixels: int,
    max_output_pixels: int,
    on_frame: Callable[[int, int | None], None] = lambda done, total: None,
) -> VideoResult:
    """`source` upscaled into `target` (written whole, or not at all), `lumas` running the network on `group` frames'
    luma planes at a time. ImageError naming `source` for a file that cannot be read, decoded or written as asked;
    UsageError for settings no video could take. `on_frame(frames done, frames the header counts or None)`."""
    av = import_av()
    muxer, default_codec = VIDEO_FORMATS.get(target.suffix.lower(), (None, ""))
    if muxer is None:
        raise UsageError(f"{target}: a video is written as {', '.join(VIDEO_FORMATS)}")
    encoder = check_settings(settings, default_codec, muxer)
    if target.is_dir() or (target.exists() and Path(source).exists() and target.samefile(source)):
        raise UsageError(f"{target}: {'a folder' if target.is_dir() else 'the video read'}; give another file name")
    try:  # a regular file, whatever links lead there: a FIFO would block the demuxer forever
        open_regular(Path(source)).close()
    except OSError as error:
        raise ImageError(source, f"cannot open it ({error.strerror or error})") from None
    options = {"format_whitelist": DEMUXERS, "protocol_whitelist": "file"}
    try:  # "file:" and the absolute path: a name with a colon is not read as a protocol
        inp = av.open(f"file:{Path(source).absolute()}", options=options)
    except (av.FFmpegError, UnicodeDecodeError) as error:
        raise ImageError(source, f"not a video this toolkit reads ({video_streams.cause(error)})") from None
    with inp:
        best = inp.streams.best("video")  # FFmpeg's choice of the main video; a cover picture never
        stream = next((s for s in [best, *inp.streams.video] if s is not None and not video_streams.is_cover(s)), None)
        if stream is None:
            raise ImageError(source, "no video stream" + (" (only a cover picture)" if best else ""))
        if stream.codec_context is None:
            raise ImageError(source, "its video codec has no decoder here")
        limits = (max_pixels, max_output_pixels)
        _check_size(source, (stream.codec_context.height, stream.codec_context.width), scale=scale, limits=limits)
        stream.thread_type = "AUTO"
        video_streams.check_copies(av, inp, stream, muxer=muxer, source=source)
        job = _Job(av, inp, stream, source=source, scale=scale, limits=limits)
        try:
            atomic_write(
                target,
                lambda file: job.run(
                    file, muxer=muxer, encoder=encoder, settings=settings, lumas=lumas, group=group, on_frame=on_frame
                ),
            )
        except av.FFmpegError as error:
            raise ImageError(source, f"cannot be upscaled ({video_streams.cause(error)})") from None
    return VideoResult(job.frames, job.size[1], job.size[0], job.copied, job.not_copied)


def _check_size(source: Path, shape: tuple[int, int], *, scale: float, limits: tuple[int, int]) -> None:
    height, width = shape
    if not 0 < width * height <= limits[0]:
        raise ImageError(source, f"{width}x{height} frames: not a size this toolkit takes ({limits[0]} pixels at most)")
    check_output(shape, scale, max_output_pixels=limits[1], name=source)  # the rule pictures are held to


def _put(items: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put `item`, waiting while the queue is full, unless `stop` is set meanwhile (False then)."""
    while not stop.is_set():
        with contextlib.suppress(queue.Full):
            items.put(item, timeout=0.1)
            return True
    return False


class _Job:
    """One video: a reader thread demuxes and decodes, the caller's thread runs the network, a writer thread encodes
    and muxes; frames and copied packets pass through bounded queues. Any failure sets `stop`, which every thread
    looks at while it waits."""

    def __init__(self, av: Any, inp: Any, stream: Any, *, source: Path, scale: float, limits: tuple[int, int]) -> None:
        self.av, self.inp, self.stream, self.source, self.scale, self.limits = av, inp, stream, source, scale, limits
        self.copies, self.not_copied = video_streams.copied(inp, stream), video_streams.not_copied(inp, stream)
        self.frames = self.copied = self.ticks = 0  # ticks: the next AVI timestamp at least
        self.avi = False  # the output is AVI (its time base is one frame)
        self.size = self.full = (0, 0)  # the frames written; ceil(scale x size) before the cut to the subsampling
        self.first: tuple[int, int] | None = None  # the source frames' size
        self.last: tuple[int, int] | None = None  # the last frame's timestamp and duration (0: not known)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []

    def run(
        self,
        file: BinaryIO,
        *,
        muxer: str,
        encoder: Any,
        settings: VideoSettings,
        lumas: Lumas,
        group: int,
        on_frame: Callable[[int, int | None], None],
    ) -> None:
        decoded: queue.Queue[tuple[str, Any]] = queue.Queue(IN_FLIGHT)
        encoded: queue.Queue[tuple[str, Any]] = queue.Queue(IN_FLIGHT)
        reader = threading.Thread(target=self._read, args=(decoded,), daemon=True)
        reader.start()
        threads = [reader]
        out = self.av.open(file, "w", format=muxer)
        closed = False
        waiting: list[Any] = []  # packets before the first frame: the streams are added once its format is known
        batch: list[tuple[list[NDArray[Any]], Any, Any]] = []  # planes, format, frame
        expected = self.stream.frames or None
        try:
            while not self.errors:
                try:
                    kind, item = decoded.get(timeout=0.1)
                except queue.Empty:
                    if not reader.is_alive():  # it ended without a word: only when `stop` was set
                        break
                    continue
                if kind == "error":
                    raise item
                if kind == "packet" and len(threads) == 1:
                    waiting.append(item)
                    if sum(p.size for p in waiting) > MAX_WAITING_BYTES:
                        raise ImageError(self.source, f"no video frame in its first {MAX_WAITING_BYTES >> 20} MiB")
                elif kind == "packet":
                    _put(encoded, ("packet", item), self.stop)
                if kind == "frame" and len(threads) == 1:
                    vout, copies = self._streams(out, item, encoder=encoder, settings=settings)
                    writer = threading.Thread(
                        target=self._write, args=(out, vout), kwargs={"copies": copies, "encoded": encoded}, daemon=True
                    )
                    writer.start()
                    threads.append(writer)
                    for packet in waiting:
                        _put(encoded, ("packet", packet), self.stop)
                if kind == "frame":
                    batch.append(self._planes(item))
                if batch and (kind == "end" or len(batch) >= group):
                    for frame in self._upscale(batch, lumas, vout.pix_fmt):
                        if not _put(encoded, ("frame", frame), self.stop):
                            break
                        self.frames += 1
                        on_frame(self.frames, expected)
                    batch = []
                if kind == "end":
                    break
            if not self.errors:
                video_streams.check_complete(self.stream, frames=self.frames, last=self.last, source=self.source)
                _put(encoded, ("end", None), self.stop)
                threads[-1].join()
            if self.errors:
                raise self.errors[0]
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
            failure = ImageError(self.source, f"cannot be decoded ({video_streams.cause(error)})")
            _put(decoded, ("error", failure), self.stop)
        except BaseException as error:  # noqa: BLE001  (handed to the caller's thread, which raises it)
            _put(decoded, ("error", error), self.stop)

    def _write(self, out: Any, vout: Any, *, copies: dict[int, Any], encoded: queue.Queue[tuple[str, Any]]) -> None:
        """The writer thread: frames encoded and muxed, packets muxed as they are, then the encoder flushed."""
        try:
            while True:
                try:
                    kind, item = encoded.get(timeout=0.1)
                except queue.Empty:
                    if self.stop.is_set():  # the caller's thread failed or was interrupted
                        return
                    continue
                if kind == "frame" and self.avi:  # its time base is one frame
                    self.ticks = video_streams.in_ticks(item, vout.time_base, at_least=self.ticks)
                packets = vout.encode(None if kind == "end" else item) if kind in ("end", "frame") else None
                for packet in packets or []:  # the last frame's own duration (a slideshow's held frame), not 1/rate
                    if self.last and self.last[1] and not self.avi and packet.pts == self.last[0]:  # source's units
                        packet.duration = self.last[1]
                if kind == "end":
                    out.mux(packets)
                    return
                if kind == "frame":
                    out.mux(packets)
                else:
                    item.stream = copies[item.stream_index]
                    out.mux(item)
                    self.copied += 1
        except self.av.FFmpegError as error:
            self.errors.append(ImageError(self.source, f"cannot be written ({video_streams.cause(error)})"))
            self.stop.set()
        except BaseException as error:  # noqa: BLE001  (handed to the caller's thread, which raises it)
            self.errors.append(error)
            self.stop.set()

    def _streams(self, out: Any, first: Any, *, encoder: Any, settings: VideoSettings) -> tuple[Any, dict[int, Any]]:
        """The output's video stream, set from the first frame, and a copy of each stream to copy."""
        fmt = video_planes.planar(self.av, first.format, self.source)
        pix_fmt = settings.pix_fmt or video_planes.encoder_format(self.av, fmt, encoder, name=self.source)
        self.full = output_shape_for((first.height, first.width), self.scale)
        step_h, step_w = video_planes.size_step(fmt, self.av.VideoFormat(pix_fmt))  # the planes' and the encoder's
        self.size = (self.full[0] - self.full[0] % step_h, self.full[1] - self.full[1] % step_w)
        self.avi = avi = out.format.name == "avi"  # AVI counts frames: a tick is a frame, at the rate they need
        rate = (avi and self.stream.guessed_rate) or self.stream.average_rate or self.stream.guessed_rate
        vout = out.add_stream(encoder.name, rate=rate)
        vout.width, vout.height, vout.pix_fmt = self.size[1], self.size[0], pix_fmt
        vout.time_base = vout.codec_context.time_base = 1 / rate if avi and rate else self.stream.time_base
        for name in video_planes.COLOUR:
            setattr(vout.codec_context, name, getattr(first, name))
        frame_bytes = self.size[0] * self.size[1] * 3 * video_planes.sample_type(fmt).itemsize  # 4:4:4 at most
        options = {"frame_bytes": frame_bytes, "frames": video_streams.counted_frames(self.stream)}
        vout.options = video_planes.encoder_options(encoder.name, settings.crf, **options)
        if self.stream.sample_aspect_ratio:  # anamorphic pixels keep their shape (both sides scale alike)
            vout.codec_context.sample_aspect_ratio = self.stream.sample_aspect_ratio
        if (matrix := video_planes.display_matrix(first)) is not None:  # how a player turns and mirrors the picture
            vout.set_display_matrix(matrix)
        vout.metadata.update(self.stream.metadata)
        out.metadata.update(video_streams.container_metadata(self.inp))
        video_streams.add_attachments(out, video_streams.attachments(self.inp))
        copies = {}
        for stream in self.copies:
            try:
                copies[stream.index] = copy = out.add_stream_from_template(stream)
                copy.metadata.update(stream.metadata)  # language, title; and default, comment, ... as they were
                copy.disposition = stream.disposition
            except (self.av.FFmpegError, ValueError) as error:
                name = stream.codec_context.name if stream.codec_context else "?"
                cause = f"its {stream.type} stream {stream.index} ({name}) cannot go into {out.format.name}"
                raise ImageError(self.source, f"{cause} ({video_streams.cause(error)})") from None
        return vout, copies

    def _planes(self, frame: Any) -> tuple[list[NDArray[Any]], Any, Any]:
        """A decoded frame's planes, checked: the size of the first frame, a timestamp after the last one."""
        shape = (frame.height, frame.width)
        if self.first is None:
            self.first = shape
        elif shape != self.first:
            size = f"{frame.width}x{frame.height} after {self.first[1]}x{self.first[0]}"
            raise ImageError(self.source, f"its frame size changes at {frame.time or 0:.3f} s ({size})")
        if frame.pts is None or (self.last is not None and frame.pts <= self.last[0]):
            raise ImageError(self.source, f"frame timestamps missing or out of order at frame {self.frames + 1}")
        self.last = (frame.pts, frame.duration or 0)
        fmt = video_planes.planar(self.av, frame.format, self.source)
        if fmt.name != frame.format.name:
            frame = frame.reformat(format=fmt.name)  # semi-planar to planar: the same samples
        return video_planes.planes_of(frame, fmt), fmt, frame

    def _upscale(self, batch: list[tuple[list[NDArray[Any]], Any, Any]], lumas: Lumas, pix_fmt: str) -> Iterator[Any]:
        """The frames of `batch` upscaled: luma through the network, the other planes resized, as output frames."""
        height, width = self.size
        full = [frame.color_range == video_planes.JPEG_RANGE for _, _, frame in batch]
        results = lumas(
            [video_planes.to_network(planes[0], fmt, full=f) for (planes, fmt, _), f in zip(batch, full, strict=True)]
        )
        for (planes, fmt, frame), luma, f in zip(batch, results, full, strict=True):
            if isinstance(luma, ImageError):
                raise ImageError(self.source, f"frame at {frame.time or 0:.3f} s: {luma.cause}")
            out = [video_planes.from_network(luma[:height, :width], fmt, full=f)]
            out += video_planes.other_planes(planes, fmt, full=self.full, size=self.size)
            made = video_planes.frame_of(self.av, out, fmt, like=frame)
            yield made if pix_fmt == fmt.name else made.reformat(format=pix_fmt)
