"""vdsr-run over files and folders: mirrored trees, formats, metadata, bad input, exit codes, nothing half-written."""

from __future__ import annotations

import io
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vdsr import Upscaler
from vdsr.runtime.cli import app
from vdsr.runtime.encoded import upscale_encoded
from vdsr.runtime.images import load_image
from vdsr.runtime.png16 import write_png16

runner = CliRunner()


def run(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def noise(shape: tuple[int, ...], seed: int = 0, dtype: type = np.uint8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(noise((20, 16, 3), 1)).save(folder / "rgb.png")
    Image.fromarray(noise((12, 18, 3), 2)).save(folder / "photo.jpg", quality=90)
    Image.fromarray(noise((10, 10), 3)).save(folder / "sub" / "gray.png")
    (folder / "notes.txt").write_text("not an image, and not picked up")
    return folder


def test_folder_mirrors_tree_formats_and_sizes(photos: Path, tiny_model: dict[str, Path]) -> None:
    code, output = run(photos, "--scale", "2", "--model", tiny_model["onnx"], "--recursive", "--tile", "8")
    assert code == 0, output
    out = photos.with_name("photos_x2")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "photo.jpg",
        "rgb.png",
        "sub/gray.png",
    ]
    assert "3 written, 0 skipped (existing), 0 failed" in output and "backend onnxruntime-cpu" in output
    with Image.open(out / "rgb.png") as rgb, Image.open(out / "sub" / "gray.png") as gray:
        assert rgb.size == (32, 40) and rgb.mode == "RGB" and gray.mode == "L" and gray.size == (20, 20)
        expected = Upscaler(tiny_model["onnx"]).upscale(np.asarray(Image.open(photos / "rgb.png")), 2)
        assert np.array_equal(np.asarray(rgb), expected)  # the CLI writes exactly what the API computes
    with Image.open(out / "photo.jpg") as jpeg:
        assert jpeg.format == "JPEG" and jpeg.size == (36, 24)


def test_not_recursive_skip_existing_format_and_single_file(photos: Path, tiny_model: dict[str, Path]) -> None:
    out = photos.parent / "out"
    code, output = run(photos, "-s", "3", "--model", tiny_model["onnx"], "-o", out, "--format", "png")
    assert code == 0, output
    assert sorted(p.name for p in out.iterdir()) == ["photo.png", "rgb.png"]  # no subfolder without --recursive
    before = (out / "rgb.png").stat().st_mtime_ns
    code, output = run(
        photos, "-s", "3", "--model", tiny_model["onnx"], "-o", out, "--format", "png", "--skip-existing"
    )
    assert code == 0 and "0 written, 2 skipped" in output and (out / "rgb.png").stat().st_mtime_ns == before
    (photos / "rgb.jpg").write_bytes((photos / "photo.jpg").read_bytes())
    code, output = run(photos, "-s", "3", "--model", tiny_model["onnx"], "-o", photos.parent / "o2", "--format", "png")
    assert code == 1 and "rgb.png: its output" in output and "is also" in output and "2 written" in output
    code, output = run(photos / "rgb.png", "-s", "2.5", "--model", tiny_model["onnx"])
    assert code == 0, output
    with Image.open(photos / "rgb_x2.5.png") as single:
        assert single.size == (40, 50)


def test_metadata_icc_exif_orientation_and_sixteen_bit(tmp_path: Path, tiny_model: dict[str, Path]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(noise((10, 14, 3), 4)).save(folder / "turned.jpg", exif=exif, icc_profile=b"icc-bytes")
    gray16 = noise((9, 11), 5, np.uint16)
    Image.fromarray(gray16).save(folder / "deep.png")
    (folder / "deep_rgb.png").write_bytes(write_png16(noise((7, 6, 3), 6, np.uint16)))
    code, output = run(folder, "-s", "2", "--model", tiny_model["onnx"])
    assert code == 0 and "warning" not in output, output
    out = tmp_path / "in_x2"
    with Image.open(out / "turned.jpg") as turned:
        assert turned.size == (20, 28)  # orientation applied: 14 wide x 10 high shown as 10 wide x 14 high
        assert turned.info.get("icc_profile") == b"icc-bytes"
        assert turned.getexif().get(0x0112, 1) == 1  # and not applied twice by viewers
    for name, shape in (("deep.png", (18, 22, 1)), ("deep_rgb.png", (14, 12, 3))):
        deep = load_image(out / name)
        assert deep.bit_depth == 16 and deep.pixels.shape == shape
        assert len(np.unique(np.rint(deep.pixels * 65535) % 257)) > 1  # real 16-bit values, not 8-bit ones scaled
    # a format that cannot hold the ICC profile: written, and a warning line says what it left out
    code, output = run(folder, "-s", "2", "--model", tiny_model["onnx"], "-o", tmp_path / "bmp", "--format", "bmp")
    assert code == 0, output
    assert "warning: " in output and "turned.jpg: its ICC colour profile is not kept (BMP holds none" in output
    assert output.count("ICC") == 1 and sorted(p.name for p in (tmp_path / "bmp").iterdir()) == [
        "deep.bmp",
        "deep_rgb.bmp",
        "turned.bmp",
    ]
    with Upscaler(tiny_model["onnx"], "onnxruntime-cpu") as upscaler:
        data = (folder / "turned.jpg").read_bytes()
        for fmt, warnings in (("BMP", 1), ("PNG", 0)):
            done = upscale_encoded(data, 2, upscaler=upscaler, fmt=fmt, limits=(10**6, 10**7), name="body")
            assert len(done.warnings) == warnings and all("ICC colour profile is not kept" in w for w in done.warnings)


def png_claiming(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")  # IHDR's size...
    data[29:33] = zlib.crc32(data[12:29]).to_bytes(4, "big")  # ...and its CRC: a valid header, a decompression bomb
    return bytes(data)


def test_bad_input_corpus(tmp_path: Path, tiny_model: dict[str, Path]) -> None:
    """Each bad file: one line naming it and the cause; every good file still written; no partial output; exit 1."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = {
        "one_pixel.png": Image.fromarray(noise((1, 1, 3), 6)),
        "cmyk.jpg": Image.fromarray(noise((8, 8, 3), 7)).convert("CMYK"),
        "la.png": Image.fromarray(noise((6, 5, 2), 8), "LA"),
        "gray16.png": Image.fromarray(noise((6, 6), 9, np.uint16)),
    }
    for name, image in good.items():
        image.save(folder / name)
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.save(folder / "palette_alpha.png", transparency=0)
    (folder / "zero.png").write_bytes(b"")
    full = io.BytesIO()
    Image.fromarray(noise((64, 64, 3), 10)).save(full, "PNG")
    (folder / "truncated.png").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    (folder / "text.png").write_text("hello, I am not a PNG\n")
    (folder / "huge.png").write_bytes(png_claiming(60000, 60000))
    frames = [Image.fromarray(noise((8, 8, 3), s)) for s in (11, 12)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])  # a video of 2 frames
    frames[0].save(folder / "pages.tif", save_all=True, append_images=frames[1:])  # two pages: refused
    (folder / "dangling.png").symlink_to(folder / "does-not-exist.png")
    code, output = run(folder, "-s", "2", "--model", tiny_model["onnx"])
    assert code == 1, output
    causes = {
        "zero.png": "an empty file (0 bytes)",
        "truncated.png": "corrupt or truncated",
        "text.png": "not an image file",
        "huge.png": "image too large to decode safely",
        "pages.tif": "animated or multi-page image",
        "dangling.png": "file not found",
    }
    failed = [line for line in output.splitlines() if line.startswith("failed:")]
    assert len(failed) == len(causes), output
    for name, cause in causes.items():
        assert any(str(folder / name) in line and cause in line for line in failed), (name, output)
    out = tmp_path / "mixed_x2"
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted([*good, "palette_alpha.png", "animated.png"])  # the rest done, no temp or partial files
    with Image.open(out / "animated.png") as animation:
        assert animation.n_frames == 2 and animation.size == (16, 16)  # a GIF's result: an animated PNG
    with (
        Image.open(out / "palette_alpha.png") as p,
        Image.open(out / "cmyk.jpg") as c,
        Image.open(out / "la.png") as la,
    ):
        assert p.mode == "RGBA" and c.mode == "RGB" and la.mode == "LA" and p.size == (16, 16)
    assert load_image(out / "gray16.png").bit_depth == 16 and Image.open(out / "one_pixel.png").size == (2, 2)
    code, output = run(folder, "-s", "2", "--model", tiny_model["onnx"], "--max-pixels", "50", "-o", tmp_path / "x")
    assert code == 1 and "8x8 is over the limit of 50 pixels" in output  # the limit is configurable
    code, output = run(
        folder, "-s", "2", "--model", tiny_model["onnx"], "--max-output-pixels", "100", "-o", tmp_path / "y"
    )
    assert code == 1 and "the 16x16 result is over the limit of 100 output pixels" in output


def test_unwritable_output_and_fail_fast(photos: Path, tiny_model: dict[str, Path]) -> None:
    blocker = photos.parent / "blocker"
    blocker.write_text("a file where the output folder should go")
    for source in (photos, photos / "rgb.png"):  # found before any image is computed
        code, output = run(source, "-s", "2", "--model", tiny_model["onnx"], "-o", blocker / "out")
        assert code == 2 and "blocker is not a writable folder" in " ".join(output.replace("│", " ").split())
    (photos.parent / "taken" / "rgb.png").mkdir(parents=True)  # one output path is taken by a folder
    code, output = run(photos, "-s", "2", "--model", tiny_model["onnx"], "-o", photos.parent / "taken")
    assert code == 1 and output.count("failed:") == 1 and "rgb.png: cannot write" in output
    assert (photos.parent / "taken" / "photo.jpg").is_file()
    (photos / "a_bad.png").write_bytes(b"")  # sorts first
    code, output = run(photos, "-s", "2", "--model", tiny_model["onnx"], "--fail-fast", "-o", photos.parent / "ff")
    assert code == 1 and output.count("failed:") == 1 and "0 written" in output


def test_results_go_beside_a_link_under_its_name(photos: Path, tiny_model: dict[str, Path]) -> None:
    work = photos.parent / "work"
    work.mkdir()
    (work / "pick.png").symlink_to(photos / "rgb.png")
    (work / "album").symlink_to(photos)
    assert run(work / "pick.png", "-s", "2", "--model", tiny_model["onnx"])[0] == 0
    assert run(work / "album", "-s", "2", "--model", tiny_model["onnx"])[0] == 0
    assert (work / "pick_x2.png").is_file() and (work / "album_x2" / "rgb.png").is_file()
    assert not (photos / "rgb_x2.png").exists() and not photos.with_name("photos_x2").exists()


def test_folders_that_cannot_be_listed_or_hold_no_images(
    photos: Path, tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = photos.parent / "empty"
    (empty / "sub").mkdir(parents=True)
    code, output = run(empty, "-s", "2", "--model", tiny_model["onnx"])
    assert code == 0 and "no images in" in output and "--recursive includes subfolders" in output
    real_scandir = os.scandir

    def scandir(path: object) -> object:  # what a folder without read permission gives (root, as in CI, reads all)
        if str(path).endswith("sub"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    code, output = run(photos, "-s", "2", "--model", tiny_model["onnx"], "-r")
    assert code == 2 and "cannot list this folder (Permission denied)" in output  # not a run that skipped it
    assert not photos.with_name("photos_x2").exists()


def test_output_formats_hold_what_the_result_has(photos: Path, tiny_model: dict[str, Path]) -> None:
    folder = photos.parent / "formats"
    folder.mkdir()
    Image.fromarray(noise((8, 8, 3), 4)).convert("P").save(folder / "still.gif")
    Image.fromarray(noise((8, 8, 4), 5)).save(folder / "alpha.png")
    Image.fromarray(noise((8, 8), 6, np.uint16)).save(folder / "gray16.png")
    code, output = run(folder, "-s", "2", "--model", tiny_model["onnx"], "-o", photos.parent / "same")
    assert code == 0, output
    assert sorted(p.name for p in (photos.parent / "same").iterdir()) == ["alpha.png", "gray16.png", "still.png"]
    code, output = run(folder, "-s", "2", "--model", tiny_model["onnx"], "-o", photos.parent / "ppm", "--format", "ppm")
    assert code == 1 and "alpha.ppm: PPM cannot hold its transparency" in output and "2 written" in output
    with Image.open(photos.parent / "ppm" / "gray16.ppm") as gray16:
        assert gray16.mode.startswith("I") and gray16.size == (16, 16)  # 16-bit PGM
    code, output = run(folder, "-s", "2", "--model", tiny_model["onnx"], "--format", "gif")
    assert code == 2 and "'gif' is not one of 'png', 'jpg'" in output and output.count("\n") == 1


def test_inputs_are_never_overwritten(photos: Path, tiny_model: dict[str, Path]) -> None:
    code, output = run(photos, "-s", "2", "--model", tiny_model["onnx"], "-o", photos)
    assert code == 2 and "must not be the input folder" in output
    code, output = run(photos, "-s", "2", "--model", tiny_model["onnx"], "-o", photos / "inside", "-r")
    assert code == 2 and "must not be the input folder or inside it" in output
    before = (photos / "rgb.png").read_bytes()
    for same in (photos, photos / "rgb.png"):  # into its own folder, or named as itself: bad usage, found first
        code, output = run(photos / "rgb.png", "-s", "2", "--model", tiny_model["onnx"], "-o", same)
        assert code == 2 and "the output would replace the input" in output, output
    assert (photos / "rgb.png").read_bytes() == before


@pytest.mark.parametrize("scale", ["0", "-1", "nan", "100", "1", "two"])
def test_bad_scales_are_usage_errors(photos: Path, tiny_model: dict[str, Path], scale: str) -> None:
    code, output = run(photos, "--scale", scale, "--model", tiny_model["onnx"])
    assert code == 2
    assert not photos.with_name("photos_x" + scale).exists()


def test_bad_usage(photos: Path, tiny_model: dict[str, Path]) -> None:
    assert run(photos / "missing", "-s", "2")[0] == 2
    code, output = run(photos, "-s", "2", "--model", tiny_model["onnx"], "--format", "xyz")
    assert code == 2 and "'xyz' is not one of" in output
    code, output = run(photos, "-s", "2", "--model", tiny_model["onnx"], "--backend", "tensorrt")
    assert code == 2 and "Backend tensorrt is not available" in output
    assert not os.path.exists(photos.with_name("photos_x2"))


def test_sample_images_are_the_ones_this_project_draws() -> None:
    """The README's sample inputs are drawn by vdsr.bench.drawn (our licence), not taken from anywhere."""
    from vdsr.bench.drawn import samples

    folder = Path(__file__).resolve().parents[1] / "bench" / "samples"
    drawn = samples()
    assert sorted(p.name for p in folder.iterdir()) == sorted(drawn)
    for name, pixels in drawn.items():
        committed = np.asarray(Image.open(folder / name)).reshape(pixels.shape)  # gray: (H, W) -> (H, W, 1)
        assert np.abs(committed.astype(int) - pixels).mean() < 1.0  # font rasterisers differ a little by version


def test_awkward_names_nested_outputs_hidden_folders_and_alpha_to_jpeg(
    tmp_path: Path, tiny_model: dict[str, Path]
) -> None:
    onnx = tiny_model["onnx"]
    nested = tmp_path / "a" / "a"
    (nested / "a").mkdir(parents=True)
    (nested / ".thumbnails").mkdir()
    for path in (nested / "x.png", nested / "a" / "x.png", nested / ".thumbnails" / "t.png", nested / "[draft] y.png"):
        Image.fromarray(noise((6, 6, 3), len(path.name))).save(path)
    before = (nested / "x.png").read_bytes()
    code, output = run(nested, "-s", "2", "--model", onnx, "-r", "-o", tmp_path / "a")  # a/a/a/x.png -> a/a/x.png
    assert code == 1 and "is an input; give another --output" in output and (nested / "x.png").read_bytes() == before
    assert f"{nested / '[draft] y.png'}" in output or (tmp_path / "a" / "[draft] y.png").exists()
    assert not (tmp_path / "a" / ".thumbnails").exists()  # hidden folders are not walked
    code, output = run(nested, "-s", "2", "--model", onnx, "-r", "-o", tmp_path / "a", "--fail-fast")
    assert code == 1 and "0 written" in output  # a planning failure stops a --fail-fast run before any work
    rgba = tmp_path / "rgba"
    rgba.mkdir()
    Image.fromarray(np.dstack([noise((5, 5, 3), 1), np.full((5, 5), 255, np.uint8)])).save(rgba / "opaque.png")
    Image.fromarray(noise((5, 5, 4), 2)).save(rgba / "see-through.png")
    (rgba / "[bad] z.png").write_bytes(b"")
    code, output = run(rgba, "-s", "2", "--model", onnx, "--format", "jpg")
    assert code == 1 and "cannot hold its transparency" in output and "[bad] z.png" in output
    with Image.open(tmp_path / "rgba_x2" / "opaque.jpg") as jpeg:
        assert jpeg.mode == "RGB"  # an alpha channel opaque everywhere is dropped, not an error
    import os

    os.chdir(rgba)
    try:
        code, output = run(".", "-s", "2", "--model", onnx, "--format", "png")
    finally:
        os.chdir(tmp_path)
    assert code == 1 and (tmp_path / "rgba_x2" / "opaque.png").exists()  # "." is named after the folder it is


def test_graph_without_metadata_is_tiled_by_the_halo_of_its_nodes(tmp_path: Path, tiny_model: dict[str, Path]) -> None:
    """A graph that says nothing of itself is known by its nodes (vdsr.onnx_network): tiled with their halo, the
    result is the one of the graph that says it."""
    import onnx as onnx_lib

    model = onnx_lib.load(str(tiny_model["onnx"]))
    del model.metadata_props[:]
    onnx_lib.save(model, str(tmp_path / "bare.onnx"))
    Image.fromarray(noise((40, 30, 3), 5)).save(tmp_path / "in.png")
    for graph in (tmp_path / "bare.onnx", tiny_model["onnx"]):
        code, output = run(
            tmp_path / "in.png", "-s", "2", "--model", graph, "--tile", "16", "-o", tmp_path / graph.stem
        )
        assert code == 0, output
    bare, said = (np.asarray(Image.open(tmp_path / name / "in.png")) for name in ("bare", "tiny"))
    assert bare.shape == (80, 60, 3) and np.array_equal(bare, said)


def test_api_turns_pil_images_upright(tiny_model: dict[str, Path]) -> None:
    image = Image.fromarray(noise((4, 10, 3), 3))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.info["exif"] = exif.tobytes()
    image.getexif()[0x0112] = 6
    assert Upscaler(tiny_model["onnx"]).upscale(image, 2).size == (8, 20)  # 10 wide, 4 high, shown turned


def test_a_backend_failure_stops_the_run_with_its_own_exit_code(
    photos: Path, tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of GPU memory or a lost device fails every later file the same way: the run stops, once (not a failure
    per file), what was already computed is written whole, and the exit code says a backend stopped it."""
    from vdsr.errors import BackendError
    from vdsr.runtime.backends.onnx_runtime import OnnxRuntimeBackend

    real_run = OnnxRuntimeBackend.run
    calls = []

    def fails_from_the_second_image(self: OnnxRuntimeBackend, batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        if len(calls) > 1:
            raise BackendError("CUDA error: out of memory")
        return real_run(self, batch)

    monkeypatch.setattr(OnnxRuntimeBackend, "run", fails_from_the_second_image)
    out = photos.parent / "stopped"
    code, output = run(photos, "-s", "2", "--model", tiny_model["onnx"], "-r", "-o", out)
    assert code == 4 and len(calls) == 2 and output.count("out of memory") == 1
    assert "stopped:" in output and "1 written" in output and "0 failed" in output
    written = [p for p in out.rglob("*") if p.is_file()]
    assert [p.name for p in written] == ["photo.jpg"] and Image.open(written[0]).size == (36, 24)  # whole
    assert not [p for p in out.rglob(".*")]  # no temporary files left


def test_a_link_to_a_fifo_in_a_folder_fails_alone(photos: Path, tiny_model: dict[str, Path]) -> None:
    os.mkfifo(photos.parent / "pipe")
    (photos / "pipe.png").symlink_to(photos.parent / "pipe")
    code, output = run(photos, "-s", "2", "--model", tiny_model["onnx"], "-o", photos.parent / "out")
    assert code == 1 and "pipe.png: not a regular file" in output and "2 written" in output


def test_file_names_reach_the_terminal_escaped_one_line_each(tmp_path: Path, tiny_model: dict[str, Path]) -> None:
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "clear\x1b[2J\nscreen.png").write_bytes(b"")  # a name that would clear the terminal and break a line
    code, output = run(folder, "-s", "2", "--model", tiny_model["onnx"])
    assert code == 1 and "\x1b" not in output
    failed = [line for line in output.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and "clear\\x1b[2J\\nscreen.png: an empty file" in failed[0]


def test_a_graph_with_nan_weights_writes_nothing(photos: Path, tiny_model: dict[str, Path], tmp_path: Path) -> None:
    """NaN weights are refused when the graph is read (exit 1); finite weights whose output overflows to inf in
    every tile stop the run as a broken model (exit 4). Nothing is written either way."""
    import onnx as onnx_lib
    from onnx import numpy_helper

    model = onnx_lib.load(str(tiny_model["onnx"]))
    first = model.graph.initializer[0]
    broken = numpy_helper.to_array(first).copy()
    nan, overflow = broken.copy(), np.full_like(broken, 3e38)  # refused when read; finite, but its sums overflow
    nan.flat[0] = np.nan
    for name, weights in (("nan.onnx", nan), ("overflow.onnx", overflow)):
        first.CopyFrom(numpy_helper.from_array(weights, first.name))
        onnx_lib.save(model, str(tmp_path / name))
    code, output = run(photos, "-s", "2", "--model", tmp_path / "nan.onnx", "-r", "-o", tmp_path / "out")
    assert code == 1 and "nan.onnx: stored tensor" in output and "holds NaN or inf" in output
    code, output = run(photos, "-s", "2", "--model", tmp_path / "overflow.onnx", "-r", "-o", tmp_path / "out")
    assert code == 4 and "NaN or inf everywhere" in output and "0 written" in output
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_a_rerun_removes_the_temporary_files_a_killed_run_left(photos: Path, tiny_model: dict[str, Path]) -> None:
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)  # a process that has exited
    out = photos.parent / "out"
    out.mkdir()
    stale = out / f".rgb.png.{dead}.k2j4x9_q.tmp"  # what atomic_write leaves when its process is killed
    live = out / f".rgb.png.{os.getpid()}.a8b7c6d5.tmp"  # a run still writing: not ours to remove
    stranger = out / f".notes.png.{dead}.k2j4x9_q.tmp"  # no output of this run has that name
    mine_too = out / "rgb.png.tmp"  # not the pattern
    for path in (stale, live, stranger, mine_too):
        path.write_bytes(b"half an image")
    code, output = run(photos, "-s", "2", "--model", tiny_model["onnx"], "-o", out, "--skip-existing")
    assert code == 0 and "removed 1 temporary files" in output
    assert not stale.exists() and live.exists() and stranger.exists() and mine_too.exists()


def test_names_differing_only_in_case_collide_only_where_the_file_system_ignores_case(
    tmp_path: Path, tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """photo.png and photo.PNG were refused as a collision on a case-sensitive file system: decided by a probe."""
    from vdsr import files
    from vdsr.runtime.places import LocalFiles

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(noise((8, 8, 3), 1)).save(folder / "photo.png")
    Image.fromarray(noise((8, 8, 3), 2)).save(folder / "photo.PNG", "PNG")
    assert not files.case_insensitive(tmp_path)  # Linux tmp: case-sensitive, as CI's
    assert not files.case_insensitive(tmp_path / "not" / "made" / "yet")  # probed in the nearest existing parent
    code, output = run(folder, "-s", "2", "--model", tiny_model["onnx"], "-o", tmp_path / "out")
    assert code == 0 and "2 written" in output, output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo.PNG", "photo.png"]
    monkeypatch.setattr(LocalFiles, "ignores_case", lambda self, folder: True)  # as on macOS or Windows disks
    code, output = run(folder, "-s", "2", "--model", tiny_model["onnx"], "-o", tmp_path / "out2")
    assert code == 1 and "is also" in output and "1 written" in output, output


@pytest.mark.parametrize("kind", ["tiff", "tiff-big-endian", "tiff-deflate", "ppm", "ppm-plain", "ppm-max-1000"])
def test_sixteen_bit_colour_tiff_and_ppm_keep_16_bits(tmp_path: Path, kind: str) -> None:
    """They were read at 8 bits without a word."""
    import tifffile

    pixels = noise((9, 7, 3), 4, np.uint16)
    path = tmp_path / f"wide.{kind.split('-')[0]}"
    maximum = 1000 if kind == "ppm-max-1000" else 65535
    if kind.startswith("tiff"):
        options = {"tiff-big-endian": {"byteorder": ">"}, "tiff-deflate": {"compression": "zlib"}}.get(kind, {})
        tifffile.imwrite(path, pixels, photometric="rgb", **options)
    elif kind == "ppm-plain":
        path.write_bytes(b"P3\n7 9\n65535\n" + " ".join(map(str, pixels.reshape(-1))).encode())
    else:
        pixels = (pixels.astype(np.int64) * maximum // 65535).astype(np.uint16)
        path.write_bytes(b"P6\n7 9\n%d\n" % maximum + pixels.astype(">u2").tobytes())
    image = load_image(path)
    assert image.bit_depth == 16 and image.pixels.shape == (9, 7, 3)
    np.testing.assert_array_equal(np.rint(image.pixels * maximum).astype(np.uint16), pixels)


def test_broken_16_bit_ppm_is_one_clear_error(tmp_path: Path) -> None:
    from vdsr.errors import ImageError

    cases = {
        "short.ppm": b"P6\n7 9\n65535\n" + bytes(20),
        "over.ppm": b"P6\n1 1\n1000\n" + b"\xff\xff" * 3,
        "words.ppm": b"P3\n2 1\n65535\n1 2 3 4 5 x",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageError, match=f"{name}: ") as error:
            load_image(tmp_path / name)
        assert "\n" not in str(error.value)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow on the cut file
def test_16_bit_tiff_layouts_not_read_exactly_are_refused(tmp_path: Path) -> None:
    """Found by review: planar deflate TIFFs came back with the high byte twice, premultiplied alpha with a wrong low
    byte, both labelled 16-bit. Refused now; an extra sample that is not alpha is dropped, the rest exact. Layouts
    Pillow cannot open (gray + alpha at 16 bits, floating point) are refused naming the layout."""
    import tifffile

    from vdsr.errors import ImageError

    pixels = noise((9, 7, 4), 5, np.uint16)
    tifffile.imwrite(
        tmp_path / "planar.tif",
        np.moveaxis(pixels, 2, 0),
        photometric="rgb",
        planarconfig="separate",
        compression="zlib",
        extrasamples=["unassalpha"],
    )
    tifffile.imwrite(tmp_path / "premultiplied.tif", pixels, photometric="rgb", extrasamples=["assocalpha"])
    for name in ("planar.tif", "premultiplied.tif"):
        with pytest.raises(ImageError, match=f"{name}: cannot read this 16-bit TIFF .*save it as contiguous RGB"):
            load_image(tmp_path / name)
    cases = {  # layouts Pillow cannot open at all: named, not "not an image file"
        "gray-alpha.tif": (
            {"photometric": "minisblack", "extrasamples": ["unassalpha"]},
            "2 samples of 16 bits, unsigned, gray, contiguous",
        ),
        "gray-planar.tif": (
            {"photometric": "minisblack", "planarconfig": "separate", "extrasamples": ["unassalpha"]},
            "2 samples of 16 bits, unsigned, gray, planar",
        ),
        "float.tif": ({"photometric": "rgb", "bigtiff": True}, "3 samples of 32 bits, floating-point, RGB, contiguous"),
    }
    for name, (options, layout) in cases.items():
        data = pixels[..., :2] if name.startswith("gray") else pixels[..., :3].astype(np.float32)
        tifffile.imwrite(tmp_path / name, np.moveaxis(data, 2, 0) if "planar" in name else data, **options)
        with pytest.raises(ImageError, match=rf"{name}: a TIFF layout not read here \({layout}\): save it as"):
            load_image(tmp_path / name)
    (tmp_path / "cut.tif").write_bytes((tmp_path / "gray-alpha.tif").read_bytes()[:10])
    with pytest.raises(ImageError, match="cut.tif: not an image file in a supported format"):
        load_image(tmp_path / "cut.tif")
    tifffile.imwrite(tmp_path / "extra.tif", pixels, photometric="rgb", extrasamples=["unspecified"])
    image = load_image(tmp_path / "extra.tif")
    np.testing.assert_array_equal(np.rint(image.pixels * 65535).astype(np.uint16), pixels[..., :3])
