"""Videos in, videos out (vdsr.runtime.video): the same frames at the same timestamps, the audio copied byte for byte,
the source's bit depth and colour metadata kept, the network on the luma plane beating bicubic, and every bad file
one line while the rest of the folder goes on. The clips are made here with PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vdsr import Upscaler
from vdsr.bench.metrics import psnr
from vdsr.errors import ImageError
from vdsr.runtime.cli import app
from vdsr.runtime.resize import imresize
from vdsr.runtime.video import VideoSettings

runner = CliRunner()
GAPS = (33, 40, 57, 21)  # ms between frames: a variable frame rate
MODEL = ("--model", "srcnn", "--backend", "onnxruntime-cpu")


def clip(
    path: Path,
    planes: list[list[np.ndarray]] | None = None,
    *,
    frames: int = 6,
    size: tuple[int, int] = (48, 64),
    fmt: str = "yuv420p",
    codec: str = "libx264",
    audio: bool = True,
    full_range: bool = False,
) -> Path:
    """A clip of `frames` noise frames (or the given planes) at variable timestamps (ms), with an AAC track."""
    rng = np.random.default_rng(7)
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=25)
        video.height, video.width = size
        video.pix_fmt = fmt
        video.time_base = video.codec_context.time_base = Fraction(1, 1000)
        if codec == "libx264":
            video.options = {"crf": "1"}
        if full_range:
            video.codec_context.color_range = 2
        sound = out.add_stream("aac", rate=48000) if audio else None
        pts = 0
        for i in range(len(planes) if planes else frames):
            frame = av.VideoFrame(size[1], size[0], fmt)
            wide = frame.format.components[0].bits > 8
            for index, plane in enumerate(frame.planes):
                dtype = np.dtype("<u2") if wide else np.dtype(np.uint8)
                rows = np.zeros((plane.height, plane.line_size // dtype.itemsize), dtype)
                data = (
                    planes[i][index]
                    if planes
                    else rng.integers(16 << wide * 2, 235 << wide * 2, (plane.height, plane.width))
                )
                rows[:, : plane.width] = data
                plane.update(rows)
            frame.pts, frame.time_base = pts, video.time_base
            if full_range:
                frame.color_range = 2
            pts += GAPS[i % len(GAPS)]
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            for i in range(12):
                samples = np.sin(np.arange(1024, dtype=np.float32) / 9 + i)[None]
                chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts, chunk.time_base = 48000, i * 1024, Fraction(1, 48000)
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
    return path


def frames_of(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(audio=0) if p.size]


def luma(frame: av.VideoFrame) -> np.ndarray:
    plane = frame.planes[0]
    dtype = np.dtype("<u2") if frame.format.components[0].bits > 8 else np.uint8
    return np.frombuffer(plane, dtype).reshape(plane.height, -1)[:, : plane.width]


@pytest.fixture(scope="module")
def upscaler() -> Upscaler:
    with Upscaler("srcnn", backend="onnxruntime-cpu") as made:
        yield made


@pytest.mark.parametrize(
    ("fmt", "codec", "suffix"),
    [("yuv420p", "libx264", ".mp4"), ("yuv420p10le", "libx264", ".mkv"), ("yuv444p", "ffv1", ".mkv")],
)
def test_every_frame_and_timestamp_kept_the_audio_copied(
    tmp_path: Path, upscaler: Upscaler, fmt: str, codec: str, suffix: str
) -> None:
    source = clip(tmp_path / f"in{suffix}", fmt=fmt, codec=codec)
    result = upscaler.upscale_video(source, tmp_path / f"out{suffix}", 2)
    before, after = frames_of(source), frames_of(tmp_path / f"out{suffix}")
    assert result.frames == len(after) == len(before) == 6
    assert [f.time for f in after] == [f.time for f in before]  # the variable gaps, exactly
    assert {(f.width, f.height, f.format.name) for f in after} == {(128, 96, fmt)}  # 10-bit stays 10-bit
    assert audio_packets(tmp_path / f"out{suffix}") == audio_packets(source) != []


def test_the_network_beats_bicubic_on_every_frame(tmp_path: Path, data_dir: Path) -> None:
    """A lossless clip of Set5 crops (studio-range Y, 4:4:4), made at half size with MATLAB bicubic: each frame's
    luma, upscaled by the shipped VDSR, is closer to the full-size crop than bicubic is."""
    from vdsr.runtime.color import rgb_to_ycbcr

    photo = np.asarray(Image.open(data_dir / "Set5" / "butterfly.png").convert("RGB"), np.float64) / 255
    ycbcr = rgb_to_ycbcr(photo)
    crops = [ycbcr[16 * i : 16 * i + 96, 24 * i : 24 * i + 96] for i in range(3)]
    small = [imresize(c, 0.5) for c in crops]
    planes = [[np.clip(np.rint(s[..., k] * 255), 0, 255) for k in range(3)] for s in small]
    source = clip(tmp_path / "small.mkv", planes, size=(48, 48), fmt="yuv444p", codec="ffv1", audio=False)
    with Upscaler("vdsr", backend="onnxruntime-cpu", precision="fp32") as upscaler:
        upscaler.upscale_video(source, tmp_path / "big.mkv", 2)
    for crop, frame, low in zip(crops, frames_of(tmp_path / "big.mkv"), planes, strict=True):
        truth = crop[..., 0] * 255
        bicubic = np.clip(imresize(low[0] / 255, 2) * 255, 0, 255)
        assert psnr(luma(frame).astype(np.float64), truth, border=2) > psnr(bicubic, truth, border=2) + 0.5


def test_odd_sizes_round_down_to_what_the_chroma_divides(tmp_path: Path, upscaler: Upscaler) -> None:
    """x1.5 of 50x34 is 75x51: 4:2:0 takes even sizes, so 74x50; 4:4:4 takes it as it is."""
    source = clip(tmp_path / "odd.mp4", size=(34, 50), frames=2, audio=False)
    assert upscaler.upscale_video(source, tmp_path / "odd_x.mp4", 1.5).width == 74
    assert {(f.width, f.height) for f in frames_of(tmp_path / "odd_x.mp4")} == {(74, 50)}
    source = clip(tmp_path / "odd444.mkv", size=(34, 50), frames=2, fmt="yuv444p", codec="ffv1", audio=False)
    assert {(f.width, f.height) for f in frames_of(source)} == {(50, 34)}
    upscaler.upscale_video(source, tmp_path / "odd444_x.mkv", 1.5)
    assert {(f.width, f.height) for f in frames_of(tmp_path / "odd444_x.mkv")} == {(75, 51)}


def test_full_range_and_colour_metadata_pass_through(tmp_path: Path, upscaler: Upscaler) -> None:
    """A full-range (JPEG) flat frame stays at its level, and its range is still said to be full."""
    flat = [[np.full((48, 64), 200), np.full((24, 32), 128), np.full((24, 32), 128)]] * 2
    source = clip(tmp_path / "full.mkv", flat, fmt="yuv420p", codec="ffv1", audio=False, full_range=True)
    upscaler.upscale_video(source, tmp_path / "full_x2.mkv", 2)
    (first, *_) = frames_of(tmp_path / "full_x2.mkv")
    assert first.color_range == 2 and abs(int(np.median(luma(first))) - 200) <= 1


def test_bad_videos_are_one_line_each_and_the_folder_goes_on(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    good = clip(folder / "good.mp4", frames=3)
    data = good.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) * 2 // 3])  # moov at the end: cut off
    (folder / "unknown.mp4").write_bytes(data.replace(b"avc1", b"zzz9"))  # a codec no decoder takes
    Image.new("RGB", (8, 8)).save(folder / "disguised.mp4", format="PNG")  # an image under a video's name
    with av.open(str(folder / "empty.mkv"), "w") as out:  # a video stream without frames, beside an audio one
        stream = out.add_stream("ffv1", rate=25)
        stream.width = stream.height = 16
        sound = out.add_stream("aac", rate=48000)
        silence = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        silence.sample_rate, silence.pts, silence.time_base = 48000, 0, Fraction(1, 48000)
        out.mux(sound.encode(silence))
        out.mux(sound.encode(None))
    (folder / "zz.png").write_bytes(_png(8))
    result = runner.invoke(app, [str(folder), "-s", "2", "-o", str(tmp_path / "out"), *MODEL])
    assert result.exit_code == 1, result.output
    failed = sorted(line for line in result.output.splitlines() if line.startswith("failed: "))
    assert [line.split(":")[1].strip() for line in failed] == [
        str(folder / n) for n in ("disguised.mp4", "empty.mkv", "truncated.mp4", "unknown.mp4")
    ]
    assert "2 written" in result.output and sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "good.mp4",
        "zz.png",
    ]
    assert [len(line.splitlines()) for line in failed] == [1] * 4


def _png(side: int) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (90, 120, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_limits_and_settings_are_refused_before_any_work(tmp_path: Path, upscaler: Upscaler) -> None:
    source = clip(tmp_path / "c.mp4", frames=2, audio=False)
    with pytest.raises(ImageError, match="c.mp4: 64x48 frames: not a size this toolkit takes"):
        upscaler.upscale_video(source, tmp_path / "x.mp4", 2, max_pixels=1000)
    with pytest.raises(ImageError, match="over the limit of 1000 output pixels"):
        upscaler.upscale_video(source, tmp_path / "x.mp4", 2, max_output_pixels=1000)
    result = runner.invoke(app, [str(source), "-s", "2", "--codec", "nonesuch", "-o", str(tmp_path / "y.mp4"), *MODEL])
    assert result.exit_code == 2 and "--codec nonesuch: not an encoder" in result.output
    assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "y.mp4").exists()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # nothing half-written


def test_the_command_names_results_and_skips_finished_videos(tmp_path: Path) -> None:
    source = clip(tmp_path / "c.mp4", frames=2)
    first = runner.invoke(app, [str(source), "-s", "2", *MODEL])
    assert first.exit_code == 0 and (tmp_path / "c_x2.mp4").is_file(), first.output
    again = runner.invoke(app, [str(source), "-s", "2", "--skip-existing", *MODEL])
    assert again.exit_code == 0 and "1 skipped" in again.output
    named = runner.invoke(app, [str(source), "-s", "2", "-o", str(tmp_path / "n.mkv"), "--codec", "ffv1", *MODEL])
    assert named.exit_code == 0 and len(frames_of(tmp_path / "n.mkv")) == 2
    refused = runner.invoke(app, [str(source), "-s", "2", "-o", str(tmp_path / "n.png"), *MODEL])
    assert refused.exit_code == 2 and "a video's result is a video" in refused.output


def test_settings_reach_the_encoder(tmp_path: Path, upscaler: Upscaler) -> None:
    source = clip(tmp_path / "c.mkv", frames=2, fmt="yuv420p10le", audio=False)
    settings = VideoSettings(codec="libx264", crf=30, pix_fmt="yuv420p")
    upscaler.upscale_video(source, tmp_path / "o.mp4", 2, settings=settings)
    with av.open(str(tmp_path / "o.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"


def test_an_interrupted_video_leaves_nothing_and_no_thread(
    tmp_path: Path, upscaler: Upscaler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in the middle of a video: no result under its name, no temporary file, the reader and writer threads
    gone (a writer left waiting would keep the process from ending)."""
    import threading

    source = clip(tmp_path / "c.mp4", frames=6)
    real, calls = upscaler.upscale_lumas, []

    def interrupted(planes: list[np.ndarray], scale: float, *, name: object = "") -> list[object]:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(planes, scale, name=name)  # type: ignore[arg-type]

    monkeypatch.setattr(upscaler, "upscale_lumas", interrupted)
    before = threading.active_count()
    with pytest.raises(KeyboardInterrupt):
        upscaler.upscale_video(source, tmp_path / "out" / "c.mp4", 2)
    assert threading.active_count() == before
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_rotation_is_kept(tmp_path: Path, upscaler: Upscaler) -> None:
    with av.open(str(tmp_path / "r.mp4"), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.set_display_rotation(90)
        for i in range(2):
            frame = av.VideoFrame(64, 48, "yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    upscaler.upscale_video(tmp_path / "r.mp4", tmp_path / "r_x2.mp4", 2)
    assert [f.rotation for f in frames_of(tmp_path / "r_x2.mp4")] == [90, 90]


def test_subtitles_are_copied_packet_for_packet(tmp_path: Path, upscaler: Upscaler) -> None:
    lines = [
        b"Dialogue: 0,0:00:00.00,0:00:00.10,Default,,0,0,0,,one",
        b"Dialogue: 0,0:00:00.10,0:00:00.20,Default,,0,0,0,,two",
    ]
    with av.open(str(tmp_path / "s.mkv"), "w") as out:
        video = out.add_stream("ffv1", rate=25)
        video.width, video.height, video.pix_fmt = 32, 16, "yuv420p"
        text = out.add_stream("ass")
        for i in range(3):
            frame = av.VideoFrame(32, 16, "yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(video.encode(frame))
        for i, line in enumerate(lines):
            packet = av.Packet(line)
            packet.stream, packet.pts, packet.dts, packet.duration = text, i * 100, i * 100, 100
            packet.time_base = Fraction(1, 1000)
            out.mux(packet)
        out.mux(video.encode(None))
    upscaler.upscale_video(tmp_path / "s.mkv", tmp_path / "s_x2.mkv", 2)
    with av.open(str(tmp_path / "s_x2.mkv")) as container:
        copied = [(bytes(p), p.pts) for p in container.demux(subtitles=0) if p.size]
    assert copied == [(line, i * 100) for i, line in enumerate(lines)]


def test_attachments_are_copied_whole_or_the_video_refused(tmp_path: Path, upscaler: Upscaler) -> None:
    """Matroska's attachments (a subtitle font): copied with their name, MIME type and bytes into .mkv (they were
    dropped); refused before any work for .mp4, which cannot hold them (nothing dropped silently)."""
    font = bytes(range(256)) * 40
    with av.open(str(tmp_path / "f.mkv"), "w") as out:
        video = out.add_stream("ffv1", rate=25)
        video.width, video.height, video.pix_fmt = 32, 16, "yuv420p"
        out.add_attachment("Sub Font.ttf", "font/ttf", font)
        for i in range(2):
            frame = av.VideoFrame(32, 16, "yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    upscaler.upscale_video(tmp_path / "f.mkv", tmp_path / "f_x2.mkv", 2)
    with av.open(str(tmp_path / "f_x2.mkv")) as container:
        kept = [(s.name, s.mimetype, bytes(s.data)) for s in container.streams if s.type == "attachment"]
        assert kept == [("Sub Font.ttf", "font/ttf", font)]
        assert container.streams.video[0].width == 64
    with pytest.raises(ImageError, match="f.mkv: its attachment 'Sub Font.ttf' 1 cannot go into mp4"):
        upscaler.upscale_video(tmp_path / "f.mkv", tmp_path / "f.mp4", 2)
    assert not (tmp_path / "f.mp4").exists()


def test_a_failing_writer_ends_the_video(tmp_path: Path, upscaler: Upscaler, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer thread fails at once (as an encoder that cannot open, or a muxer refusing timestamps, does): the
    caller's thread raises its error (it used to wait forever for a reader that had stopped), nothing is left, and
    no thread outlives the video."""
    import threading

    from vdsr.runtime import video

    def failing(self: video._Job, out: object, vout: object, **queues: object) -> None:
        self.errors.append(RuntimeError("the encoder broke"))
        self.stop.set()

    monkeypatch.setattr(video._Job, "_write", failing)
    source = clip(tmp_path / "c.mp4", frames=30, audio=False)
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="the encoder broke"):
        upscaler.upscale_video(source, tmp_path / "out.mp4", 2)
    assert threading.active_count() == before and sorted(p.name for p in tmp_path.iterdir()) == ["c.mp4"]


def test_a_frame_size_change_is_refused(tmp_path: Path, upscaler: Upscaler) -> None:
    """Two MPEG-TS clips of other sizes, one after the other: the limits are checked on the first size, so a later,
    larger frame must not pass unchecked, nor be cut to the first size."""
    small = clip(tmp_path / "small.ts", frames=3, size=(32, 32), audio=False)
    large = clip(tmp_path / "large.ts", frames=3, size=(64, 96), audio=False)
    (tmp_path / "both.ts").write_bytes(small.read_bytes() + large.read_bytes())
    with pytest.raises(ImageError, match=r"both.ts: its frame size changes at .* \(96x64 after 32x32\)"):
        upscaler.upscale_video(tmp_path / "both.ts", tmp_path / "out.ts", 2)
    assert not (tmp_path / "out.ts").exists()


def test_without_pyav_each_video_fails_in_one_line_and_the_images_run(tmp_path: Path) -> None:
    """The base install has no PyAV: a folder of images and a video writes the images and fails the video, saying
    which extra brings it (not the whole run)."""
    import subprocess
    import sys

    from extras import without

    folder = tmp_path / "in"
    folder.mkdir()
    clip(folder / "c.mp4", frames=2, audio=False)
    Image.new("RGB", (8, 8), (10, 200, 30)).save(folder / "a.png")
    program = without(("av",), module="vdsr.runtime.cli", prog="vdsr-run")
    command = [sys.executable, "-c", program, str(folder), "-s", "2", "-o", str(tmp_path / "out"), *MODEL]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert f'failed: {folder / "c.mp4"}: videos need PyAV: pip install "vdsr[video]"' in done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]


def test_a_stream_the_container_cannot_hold_is_refused_before_any_work(
    tmp_path: Path, upscaler: Upscaler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KLV data in MPEG-TS: copied packet for packet into .ts; refused for .mp4, whose header cannot hold it, before
    a frame is decoded (it used to fail once the header was written, after the work)."""
    with av.open(str(tmp_path / "klv.ts"), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        data = out.add_data_stream("klv")
        for i in range(3):
            frame = av.VideoFrame(64, 48, "yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(video.encode(frame))
            packet = av.Packet(b"\x06\x0e\x2b\x34" + bytes([i]) * 12)
            packet.stream, packet.pts, packet.dts, packet.time_base = data, i * 3600, i * 3600, Fraction(1, 90000)
            out.mux(packet)
        out.mux(video.encode(None))
    upscaler.upscale_video(tmp_path / "klv.ts", tmp_path / "klv_x2.ts", 2)
    with av.open(str(tmp_path / "klv_x2.ts")) as container:
        assert [bytes(p) for p in container.demux(data=0) if p.size] == [
            b"\x06\x0e\x2b\x34" + bytes([i]) * 12 for i in range(3)
        ]
    monkeypatch.setattr(upscaler, "upscale_lumas", lambda *args, **kwargs: pytest.fail("work began"))
    with pytest.raises(ImageError, match="klv.ts: its data stream 1 cannot go into mp4"):
        upscaler.upscale_video(tmp_path / "klv.ts", tmp_path / "klv.mp4", 2)


def test_the_encoders_lookahead_is_bounded_for_large_frames() -> None:
    """libx264 holds rc-lookahead frames (40 by default: 2 GB of 8K frames); large frames get a shorter one."""
    from vdsr.runtime.video_planes import encoder_options

    assert encoder_options("libx264", None, frame_bytes=1920 * 1080 * 3) == {"crf": "18", "rc-lookahead": "40"}
    assert encoder_options("libx264", 23, frame_bytes=7680 * 4320 * 3)["rc-lookahead"] == "10"
    assert encoder_options("libvpx-vp9", None, frame_bytes=1) == {"crf": "18", "b": "0"}
    assert encoder_options("ffv1", None, frame_bytes=1) == {}
