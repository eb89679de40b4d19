"""Animated GIF, PNG and WebP run as videos do (vdsr.runtime.animation): every frame upscaled as a still is, each
frame's duration and the loop count kept, a GIF's result an animated PNG; bounds checked before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vdsr import Upscaler
from vdsr.runtime import animation
from vdsr.runtime.cli import app

MODEL = ("--model", "srcnn", "--backend", "onnxruntime-cpu")
DURATIONS = [100, 200, 50]


def frames(mode: str = "RGB") -> list[Image.Image]:
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 256, (20, 30, len(mode)), dtype=np.uint8), mode) for _ in range(3)]


def shown(path: Path) -> tuple[str, list[int], object, list[np.ndarray]]:
    """Format, each frame's duration, the loop count and each frame's pixels, as a viewer shows them."""
    with Image.open(path) as image:
        durations, pixels = [], []
        for index in range(image.n_frames):
            image.seek(index)
            image.load()
            durations.append(int(image.info.get("duration", 0)))
            pixels.append(np.asarray(image.convert("RGBA")))
        return str(image.format), durations, image.info.get("loop"), pixels


@pytest.mark.parametrize(
    ("name", "written", "plays"), [("a.gif", "a.png", 3), ("b.png", "b.png", 2), ("c.webp", "c.webp", 2)]
)
def test_frames_durations_and_plays_are_kept(tmp_path: Path, name: str, written: str, plays: int) -> None:
    """loop=2: a GIF's Netscape count is the plays after the first (3 in all); APNG's and WebP's count the plays."""
    folder = tmp_path / "in"
    folder.mkdir()
    first, *rest = frames("RGBA" if name.endswith(".png") else "RGB")
    options = {"lossless": True} if name.endswith(".webp") else {}
    first.save(folder / name, save_all=True, append_images=rest, duration=DURATIONS, loop=2, **options)
    result = CliRunner().invoke(app, [str(folder), "-s", "2", "-o", str(tmp_path / "out"), *MODEL])
    assert result.exit_code == 0, result.output
    fmt, durations, loop, pixels = shown(tmp_path / "out" / written)
    assert fmt == {"png": "PNG", "webp": "WEBP"}[written.split(".")[1]]
    assert durations == DURATIONS and loop == plays and len(pixels) == 3 and pixels[0].shape == (40, 60, 4)
    _, _, _, source = shown(folder / name)
    with Upscaler("srcnn", backend="onnxruntime-cpu") as upscaler:  # each frame: what the still would give
        for got, frame in zip(pixels, source, strict=True):
            alone = np.asarray(upscaler.upscale(Image.fromarray(frame), 2).convert("RGBA"))
            assert np.array_equal(got, alone)  # lossless formats: exactly


def test_bounds_are_checked_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, *rest = frames()
    first.save(tmp_path / "a.gif", save_all=True, append_images=rest, duration=DURATIONS)
    result = CliRunner().invoke(app, [str(tmp_path / "a.gif"), "-s", "2", "--max-output-pixels", "5000", *MODEL])
    assert result.exit_code == 1 and "its frames' results are over the limit of 5000 output pixels" in result.output
    monkeypatch.setattr(animation, "MAX_FRAMES", 2)
    result = CliRunner().invoke(app, [str(tmp_path / "a.gif"), "-s", "2", *MODEL])
    assert result.exit_code == 1 and "more than 2 frames" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif"]  # nothing written, nothing left


def test_a_gif_that_plays_once_still_plays_once(tmp_path: Path) -> None:
    """A GIF without a loop count (no NETSCAPE block) plays once: its animated PNG says one play, not forever."""
    first, *rest = frames()
    first.save(tmp_path / "once.gif", save_all=True, append_images=rest, duration=DURATIONS)
    with Image.open(tmp_path / "once.gif") as gif:
        assert "loop" not in gif.info
    result = CliRunner().invoke(app, [str(tmp_path / "once.gif"), "-s", "2", *MODEL])
    assert result.exit_code == 0, result.output
    assert shown(tmp_path / "once_x2.png")[2] == 1


@pytest.mark.parametrize(("options", "expected"), [({"quality": 60}, "vdsr_real"), ({"lossless": True}, "vdsr")])
def test_model_auto_reads_how_an_animated_webp_is_coded(tmp_path: Path, options: dict, expected: str) -> None:
    """Found by review: an animated lossy WebP went to `vdsr` (the coding is inside its frames' ANMF chunks, which
    were not read), where a lossy still goes to `vdsr_real`."""
    first, *rest = frames()
    first.save(tmp_path / "a.webp", save_all=True, append_images=rest, duration=DURATIONS, **options)
    backend = ("--backend", "onnxruntime-cpu")
    for model in ("auto", expected):
        result = CliRunner().invoke(
            app,
            [str(tmp_path / "a.webp"), "-s", "2", "-o", str(tmp_path / f"{model}.webp"), "--model", model, *backend],
        )
        assert result.exit_code == 0, result.output
    auto, chosen = (shown(tmp_path / f"{m}.webp")[3] for m in ("auto", expected))
    assert len(auto) == 3 and all(np.array_equal(a, b) for a, b in zip(auto, chosen, strict=True))


def test_apng_files_are_read_and_written_by_their_suffix(tmp_path: Path) -> None:
    """Found by review: `.apng` was not an image suffix: a folder's APNGs were not picked up, and `-o x.apng` for
    an animated GIF made a folder x.apng/."""
    folder = tmp_path / "in"
    folder.mkdir()
    first, *rest = frames()
    first.save(folder / "a.apng", save_all=True, append_images=rest, duration=DURATIONS, format="PNG")
    first.save(tmp_path / "b.gif", save_all=True, append_images=rest, duration=DURATIONS)
    result = CliRunner().invoke(app, [str(folder), "-s", "2", "-o", str(tmp_path / "out"), *MODEL])
    assert result.exit_code == 0 and "1 written" in result.output, result.output
    result = CliRunner().invoke(app, [str(tmp_path / "b.gif"), "-s", "2", "-o", str(tmp_path / "x.apng"), *MODEL])
    assert result.exit_code == 0 and (tmp_path / "x.apng").is_file(), result.output
    for written in (tmp_path / "out" / "a.apng", tmp_path / "x.apng"):
        fmt, durations, _, pixels = shown(written)
        assert fmt == "PNG" and durations == DURATIONS and pixels[0].shape == (40, 60, 4)
