"""Which stream of a video is upscaled, and what is said of the streams left out (vdsr.runtime.video,
vdsr.runtime.video_streams): FFmpeg's own choice of the main video (never a cover picture, whatever its place), and one
warning line naming every stream neither upscaled nor copied; a timecode track's timecode kept; subtitles refused
where they would become data. Tiny clips, the
shipped srcnn on ONNX Runtime's CPU."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.stream import Disposition
from test_video import MODEL
from typer.testing import CliRunner

from vdsr import Upscaler
from vdsr.runtime.cli import app


def _stream(out: av.container.OutputContainer, codec: str, *, size: tuple[int, int], fmt: str) -> av.VideoStream:
    stream = out.add_stream(codec, rate=10)
    stream.width, stream.height, stream.pix_fmt = size[1], size[0], fmt
    return stream


def _frames(stream: av.VideoStream, count: int, size: tuple[int, int]) -> list[av.Packet]:
    packets = []
    for i in range(count):
        frame = av.VideoFrame.from_ndarray(np.full((*size, 3), 30 * i + 20, np.uint8), format="rgb24")
        packets += stream.encode(frame.reformat(format=stream.pix_fmt))
    return packets + stream.encode(None)


def streams(path: Path, *, muxer: str, still_first: bool, second: bool, cover: bool) -> Path:
    """A 5-frame 32x24 H.264 video; before it (`still_first`) a one-frame MJPEG video stream; after it (`second`) a
    second 5-frame 16x16 H.264 stream, and (`cover`) a cover picture (MP4's attached picture)."""
    with av.open(str(path), "w", format=muxer) as out:
        still = _stream(out, "mjpeg", size=(32, 32), fmt="yuvj420p") if still_first else None
        main = _stream(out, "libx264", size=(24, 32), fmt="yuv420p")
        other = _stream(out, "libx264", size=(16, 16), fmt="yuv420p") if second else None
        picture = _stream(out, "mjpeg", size=(32, 32), fmt="yuvj420p") if cover else None
        if picture is not None:
            picture.disposition = Disposition.attached_pic
        for stream, count, size in [
            (main, 5, (24, 32)),
            (other, 5, (16, 16)),
            (still, 1, (32, 32)),
            (picture, 1, (32, 32)),
        ]:
            if stream is not None:
                out.mux(_frames(stream, count, size))
    return path


def test_the_main_video_is_upscaled_and_the_streams_left_out_are_named(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    streams(tmp_path / "in" / "a.mkv", muxer="matroska", still_first=True, second=True, cover=False)
    streams(tmp_path / "in" / "b.mp4", muxer="mp4", still_first=False, second=False, cover=True)
    with av.open(str(tmp_path / "in" / "b.mp4")) as given:
        assert [int(s.disposition) & int(Disposition.attached_pic) for s in given.streams.video] == [0, 1024]
    result = CliRunner().invoke(app, [str(tmp_path / "in"), "-s", "2", "-o", str(tmp_path / "out"), *MODEL])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("warning:")]
    shown = tmp_path / "in"
    assert lines == [
        f"warning: {shown / 'a.mkv'}: its video stream 0, video stream 2 not copied (the main video stream alone is "
        "upscaled; other streams but audio, subtitles and data are left out)",
        f"warning: {shown / 'b.mp4'}: its cover picture 1 not copied (the main video stream alone is upscaled; other "
        "streams but audio, subtitles and data are left out)",
    ]
    for name in ("a.mkv", "b.mp4"):  # the 5-frame 32x24 stream, wherever it was
        with av.open(str(tmp_path / "out" / name)) as written:
            (video,) = written.streams.video
            assert (video.codec_context.width, video.codec_context.height) == (64, 48)
            assert sum(1 for _ in written.decode(video)) == 5


def test_a_cover_picture_alone_is_not_a_video(tmp_path: Path) -> None:
    """An audio file with its cover (MP4): FFmpeg's best video stream is the picture, which is not upscaled as a
    one-frame video."""
    source = tmp_path / "song.mp4"
    with av.open(str(source), "w") as out:
        sound = out.add_stream("aac", rate=48000)
        picture = _stream(out, "mjpeg", size=(32, 32), fmt="yuvj420p")
        picture.disposition = Disposition.attached_pic
        silence = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        silence.sample_rate = 48000
        out.mux(sound.encode(silence) + sound.encode(None))
        out.mux(_frames(picture, 1, (32, 32)))
    result = CliRunner().invoke(app, [str(source), "-s", "2", "-o", str(tmp_path / "out.mp4"), *MODEL])
    assert result.exit_code == 1 and f"{source}: no video stream (only a cover picture)" in result.output, result.output
    assert not (tmp_path / "out.mp4").exists()


def test_a_video_with_nothing_left_out_gives_no_warning(tmp_path: Path) -> None:
    source = streams(tmp_path / "c.mp4", muxer="mp4", still_first=False, second=False, cover=False)
    with Upscaler("srcnn", backend="onnxruntime-cpu") as upscaler:
        assert upscaler.upscale_video(source, tmp_path / "out.mp4", 2).not_copied == ()
        cover = streams(tmp_path / "d.mp4", muxer="mp4", still_first=False, second=False, cover=True)
        assert upscaler.upscale_video(cover, tmp_path / "out2.mp4", 2).not_copied == ("cover picture 1",)
    result = CliRunner().invoke(app, [str(source), "-s", "2", "-o", str(tmp_path / "out3.mp4"), *MODEL])
    assert result.exit_code == 0 and "warning" not in result.output, result.output


def test_a_timecode_track_is_kept_as_the_timecode_in_every_container(tmp_path: Path) -> None:
    """A camera's MOV with a timecode track (tmcd): copying the track failed a MOV result after its frames (the copy
    has no frame rate) and was refused by MP4 and Matroska; its timecode is the result's, as FFmpeg's tool keeps it."""
    source = tmp_path / "camera.mov"
    with av.open(str(source), "w", format="mov") as out:
        out.metadata["timecode"] = "01:02:03:04"  # the muxer writes the timecode track
        main = _stream(out, "libx264", size=(24, 32), fmt="yuv420p")
        out.mux(_frames(main, 5, (24, 32)))
    with av.open(str(source)) as given:
        assert [s.type for s in given.streams] == ["video", "data"]
        timecode = given.streams[1].metadata["timecode"]  # "01:02:03:4": FFmpeg writes frames in the rate's digits
    for suffix in (".mov", ".mp4", ".mkv"):
        target = tmp_path / f"out{suffix}"
        result = CliRunner().invoke(app, [str(source), "-s", "2", "-o", str(target), *MODEL])
        assert result.exit_code == 0 and "warning" not in result.output, result.output
        with av.open(str(target)) as written:
            tags = [dict(written.metadata), *(dict(s.metadata) for s in written.streams)]
            assert timecode in {value for tag in tags for key, value in tag.items() if key.lower() == "timecode"}
            assert [s.type for s in written.streams] == (["video"] if suffix == ".mkv" else ["video", "data"])


def _subtitled(path: Path, codec: str) -> Path:
    """A 3-frame FFV1 video with a subtitle stream in `codec` (one ASS line when it is "ass")."""
    with av.open(str(path), "w") as out:
        main = _stream(out, "ffv1", size=(16, 32), fmt="yuv420p")
        text = out.add_stream(codec)
        out.mux(_frames(main, 3, (16, 32)))
        if codec == "ass":
            packet = av.Packet(b"Dialogue: 0,0:00:00.00,0:00:00.10,Default,,0,0,0,,one")
            packet.stream, packet.pts, packet.dts, packet.duration = text, 0, 0, 100
            packet.time_base = Fraction(1, 1000)
            out.mux(packet)
    return path


def test_subtitles_a_container_would_turn_into_data_are_refused_before_any_work(tmp_path: Path) -> None:
    """MPEG-TS keeps DVB subtitles; any other subtitle codec it writes as an anonymous data stream, without an error."""
    source = _subtitled(tmp_path / "ass.mkv", "ass")
    result = CliRunner().invoke(app, [str(source), "-s", "2", "-o", str(tmp_path / "out.ts"), *MODEL])
    expected = f"{source}: its ass subtitle stream 1 would become data in mpegts: write another container"
    assert result.exit_code == 1 and expected in result.output, result.output
    assert not (tmp_path / "out.ts").exists()
    dvb = _subtitled(tmp_path / "dvb.mkv", "dvb_subtitle")
    result = CliRunner().invoke(app, [str(dvb), "-s", "2", "-o", str(tmp_path / "dvb.ts"), *MODEL])
    assert result.exit_code == 0, result.output
    with av.open(str(tmp_path / "dvb.ts")) as written:
        assert [s.type for s in written.streams] == ["video", "subtitle"]
    with Upscaler("srcnn", backend="onnxruntime-cpu") as upscaler:  # Matroska holds it
        upscaler.upscale_video(source, tmp_path / "ass_x2.mkv", 2)
    with av.open(str(tmp_path / "ass_x2.mkv")) as written:
        assert [s.type for s in written.streams] == ["video", "subtitle"]
