"""A video's other streams, kept as they are: audio, subtitle and data streams copied packet for packet, and
attachments (Matroska's fonts) copied whole into the output's header, and a timecode track's timecode kept as the
output's (MOV and MP4 write a timecode track from it). What the output container cannot hold fails
the video before any work, naming the stream. Not copied, and named for the run's warning (`not_copied`): a second
video stream, and cover pictures, which FFmpeg shows as video streams (MP4's attached pictures, Matroska's image
attachments)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from vdsr.errors import ImageError, first_line

COPIED = ("audio", "subtitle", "data")  # the streams copied packet for packet
# MPEG-TS writes a subtitle codec it does not know as an anonymous data stream, without an error. Of those with a
# decoder here, it keeps DVB subtitles; teletext and ARIB captions, which it keeps too, have no decoder in
# PyAV's wheels, and a stream without one is left to the muxer.
MPEGTS_SUBTITLES = ("dvb_subtitle",)  # FFmpeg's codec names (a decoder's may differ: dvbsub, mp3float, dca)
# The same for audio: MPEG-TS has stream types for these; PCM, FLAC, Vorbis and the rest would become data (and an
# attachment too). WebM drops attachments without a word.
MPEGTS_AUDIO = ("aac", "aac_latm", "mp2", "mp3", "ac3", "eac3", "dts", "truehd", "opus", "s302m")


def cause(error: BaseException) -> str:
    """An FFmpeg error's first line, on one line and not over 200 characters."""
    return " ".join(first_line(error).split())[:200]


def copied(inp: Any, video: Any) -> list[Any]:
    """The streams of `inp` copied packet for packet beside its `video` stream."""
    return [s for s in inp.streams if s is not video and s.type in COPIED and not _is_timecode(s)]


def _is_timecode(stream: Any) -> bool:
    """A timecode track (QuickTime's tmcd, which FFmpeg shows as a data stream with a "timecode")."""
    return stream.type == "data" and "timecode" in stream.metadata


def container_metadata(inp: Any) -> dict[str, str]:
    """`inp`'s container metadata, and the timecode of its timecode track, as FFmpeg's own tool keeps it: MOV and MP4
    muxers write a new timecode track from it (a copied one would have no frame rate), Matroska a tag."""
    timecodes = [s.metadata["timecode"] for s in inp.streams if _is_timecode(s)]
    return {"timecode": timecodes[0]} | dict(inp.metadata) if timecodes else dict(inp.metadata)


def not_copied(inp: Any, video: Any) -> tuple[str, ...]:
    """The streams of `inp` neither upscaled (`video`) nor copied, named for the run's warning."""
    return tuple(
        f"{_kind(s)} {s.index}" for s in inp.streams if s is not video and s.type not in (*COPIED, "attachment")
    )


def counted_frames(stream: Any) -> int:
    """The frames a video stream's header counts (MP4, MOV), else its duration times its frame rate (Matroska states
    a duration); 0 where neither is known (MPEG-TS)."""
    if stream.frames:
        return int(stream.frames)
    if stream.duration and stream.average_rate:
        return round(float(stream.duration * stream.time_base * stream.average_rate))
    return 0


def is_cover(stream: Any) -> bool:
    """A cover picture (MP4's attached picture, Matroska's image attachment): FFmpeg shows it as a video stream."""
    from av.stream import Disposition

    return stream.type == "video" and bool(stream.disposition & Disposition.attached_pic)


def _kind(stream: Any) -> str:
    return "cover picture" if is_cover(stream) else f"{stream.type} stream"


def attachments(inp: Any) -> list[Any]:
    return [s for s in inp.streams if s.type == "attachment"]


def add_attachments(out: Any, streams: list[Any]) -> None:
    """Each attachment into `out`'s header, with its name and MIME type."""
    for stream in streams:
        out.add_attachment(stream.name or f"attachment{stream.index}", stream.mimetype or "", bytes(stream.data or b""))


def check_copies(av: Any, inp: Any, video: Any, *, muxer: str, source: Path) -> None:
    """ImageError, before any work, for a stream or attachment the output container cannot hold: each is tried in a
    header written to memory (KLV data into MP4 is refused only there)."""
    for stream in [*copied(inp, video), *attachments(inp)]:
        name = stream.codec_context.codec.canonical_name if stream.codec_context else None
        kept = {"subtitle": MPEGTS_SUBTITLES, "audio": MPEGTS_AUDIO}.get(stream.type)
        if muxer == "mpegts" and (stream.type == "attachment" or (kept and name is not None and name not in kept)):
            what = f"attachment {stream.name!r}" if stream.type == "attachment" else f"{name} {stream.type} stream"
            raise ImageError(source, f"its {what} {stream.index} would become data in {muxer}: write another container")
        if muxer == "webm" and stream.type == "attachment":
            raise ImageError(source, f"its attachment {stream.name!r} would be dropped by webm: write .mkv")
        probe = av.open(io.BytesIO(), "w", format=muxer)
        try:
            if stream.type == "attachment":
                add_attachments(probe, [stream])
            else:
                probe.add_stream_from_template(stream)
            probe.start_encoding()
        except (av.FFmpegError, ValueError, TypeError) as error:
            what = f"attachment {stream.name!r}" if stream.type == "attachment" else f"{stream.type} stream"
            raise ImageError(
                source, f"its {what} {stream.index} cannot go into {muxer} ({cause(error)}): write another container"
            ) from None
        finally:
            with contextlib.suppress(Exception):
                probe.close()


def check_complete(stream: Any, *, frames: int, last: tuple[int, int] | None, source: Path) -> None:
    """ImageError for a video that gave no frame, or whose frames end before its stream's stated duration; `last`:
    the last frame's timestamp and duration in the stream's time base (a held last frame, a slideshow's, ends late;
    a duration of 0, not known, is allowed two frame intervals)."""
    if frames == 0:
        raise ImageError(source, "no frames")
    if stream.duration and last is not None:
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        end = float((stream.start_time or 0) + stream.duration) * float(stream.time_base)
        ends = float((last[0] + last[1]) * stream.time_base)
        if ends + (1 if last[1] else 2) / rate < end - 1e-6:
            raise ImageError(source, f"truncated or damaged: its frames end at {ends:.3f} s of {end:.3f} s")


def in_ticks(frame: Any, tick: Any, *, at_least: int) -> int:
    """`frame`'s timestamp counted in `tick`s (AVI's time base is one frame), `at_least` or later (a variable frame
    rate made constant, as FFmpeg's own tool does for AVI); the next tick free."""
    frame.pts = max(round(frame.pts * frame.time_base / tick), at_least)
    frame.time_base = tick
    return int(frame.pts) + 1
