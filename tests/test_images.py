from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from vdsr.errors import ImageError
from vdsr.runtime.images import load_image


def png_with_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but holds one row of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x00" * min(width, 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_rgb_values_are_exact(tmp_path: Path, rng: np.random.Generator) -> None:
    rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.pixels.shape == (9, 7, 3) and image.pixels.dtype == np.float32
    assert image.bit_depth == 8 and not image.has_alpha and not image.is_gray
    assert np.array_equal(np.rint(image.pixels * 255).astype(np.uint8), rgb)


def test_gray_modes(tmp_path: Path, rng: np.random.Generator) -> None:
    gray = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "l.png")
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "rgb_gray.png")
    Image.fromarray(np.arange(30).reshape(6, 5) % 2 == 1).save(tmp_path / "bilevel.png")
    l_image = load_image(tmp_path / "l.png")
    assert l_image.pixels.shape == (6, 5, 1) and l_image.is_gray
    assert np.array_equal(np.rint(l_image.pixels[..., 0] * 255), gray)
    rgb_gray = load_image(tmp_path / "rgb_gray.png")
    assert rgb_gray.pixels.shape == (6, 5, 3) and rgb_gray.is_gray
    bilevel = load_image(tmp_path / "bilevel.png").pixels[..., 0]
    assert np.array_equal(bilevel, (np.arange(30).reshape(6, 5) % 2).astype(np.float32))


def test_alpha_modes(tmp_path: Path, rng: np.random.Generator) -> None:
    la = rng.integers(0, 256, (4, 6, 2), dtype=np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    image = load_image(tmp_path / "la.png")
    assert image.has_alpha and image.color.shape == (4, 6, 1)
    assert image.alpha is not None and np.array_equal(np.rint(image.alpha * 255), la[..., 1])
    rgba = rng.integers(0, 256, (4, 6, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert load_image(tmp_path / "rgba.png").color.shape == (4, 6, 3)


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.save(tmp_path / "p.png")
    palette.save(tmp_path / "p_transparent.png", transparency=1)
    opaque = load_image(tmp_path / "p.png")
    assert not opaque.has_alpha and np.allclose(opaque.color[0, 0], [1, 0, 0])
    transparent = load_image(tmp_path / "p_transparent.png")
    assert transparent.has_alpha and transparent.alpha is not None and np.all(transparent.alpha == 0)


def test_sixteen_bit_gray_keeps_precision(tmp_path: Path) -> None:
    gray = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000 + 7).astype(np.uint16)
    Image.fromarray(gray).save(tmp_path / "g16.png")
    image = load_image(tmp_path / "g16.png")
    assert image.bit_depth == 16
    assert np.allclose(image.pixels[..., 0] * 65535, gray, atol=0.01)


def test_sixteen_bit_gray_colour_key_becomes_alpha(tmp_path: Path) -> None:
    gray = np.array([[0, 1000], [40000, 65535]], np.uint16)
    Image.fromarray(gray).save(tmp_path / "key.png", transparency=1000)
    image = load_image(tmp_path / "key.png")
    assert image.bit_depth == 16 and image.has_alpha and image.pixels.shape == (2, 2, 2)
    assert np.array_equal(image.alpha, [[1, 0], [1, 1]]) and np.array_equal(np.rint(image.color[..., 0] * 65535), gray)


@pytest.mark.parametrize("byte_order", [">u2", "<u2"])
def test_sixteen_bit_gray_in_either_byte_order(tmp_path: Path, byte_order: str) -> None:
    gray = np.array([[5000, 10000], [65535, 0]]).astype(byte_order)
    Image.fromarray(gray).save(tmp_path / "g16.tif")  # big-endian becomes PIL mode I;16B
    image = load_image(tmp_path / "g16.tif")
    assert image.bit_depth == 16
    assert np.array_equal(np.rint(image.pixels[..., 0] * 65535), gray.astype(np.float64))


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (10, 6), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    image = load_image(tmp_path / "cmyk.jpg")
    assert image.color.shape == (6, 10, 3)
    assert image.color[..., 0].mean() > 0.9 and image.color[..., 1].mean() < 0.1  # red


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: stored 20 wide, shown 20 tall
    Image.new("RGB", (20, 10), "white").save(tmp_path / "rotated.jpg", exif=exif)
    assert load_image(tmp_path / "rotated.jpg").pixels.shape == (20, 10, 3)


def write_truncated_png(path: Path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])


def write_animated_gif(path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), color) for color in ("red", "green", "blue")]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    assert getattr(Image.open(path), "n_frames", 1) == 3


@pytest.mark.parametrize(
    ("name", "make", "cause"),
    [
        ("empty.png", lambda p: p.write_bytes(b""), "an empty file"),
        ("text.png", lambda p: p.write_text("hello, I am not a PNG"), "not an image file"),
        ("truncated.png", write_truncated_png, "truncated"),
        ("huge.png", lambda p: p.write_bytes(png_with_header(60000, 60000)), "too large|over the limit"),
        ("animated.gif", write_animated_gif, "animated"),
        ("float.tif", lambda p: Image.fromarray(np.zeros((4, 4), np.float32)).save(p), "unsupported pixel format"),
        ("lab.tif", lambda p: Image.new("LAB", (4, 4), (50, 10, 10)).save(p), "unsupported pixel format 'LAB'"),
        ("missing.png", lambda p: None, "file not found"),
        ("folder.png", lambda p: p.mkdir(), "is a directory"),
    ],
)
def test_bad_files_raise_one_line_naming_the_file(tmp_path: Path, name: str, make: object, cause: str) -> None:
    path = tmp_path / name
    make(path)  # type: ignore[operator]
    with pytest.raises(ImageError, match=cause) as raised:
        load_image(path)
    message = str(raised.value)
    assert message.startswith(str(path)) and "\n" not in message


def test_pixel_limit_is_configurable(tmp_path: Path) -> None:
    Image.new("RGB", (100, 100)).save(tmp_path / "a.png")
    with pytest.raises(ImageError, match="over the limit of 9999 pixels"):
        load_image(tmp_path / "a.png", max_pixels=9999)
    assert load_image(tmp_path / "a.png", max_pixels=10000).pixels.shape == (100, 100, 3)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_sixteen_bit_colour_png_keeps_precision_and_orientation(tmp_path: Path, orientation: int) -> None:
    """PIL would cut 16-bit RGB to 8 bits; vdsr.runtime.png16 keeps it, oriented exactly as PIL orients 8-bit files."""
    from vdsr.runtime.png16 import write_png16

    rgb8 = np.random.default_rng(orientation).integers(0, 256, (5, 3, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb8).save(tmp_path / "eight.png", exif=exif.tobytes())
    png = write_png16(rgb8.astype(np.uint16) * 257)
    with_exif = png[:33] + png_chunk(b"eXIf", exif.tobytes()) + png[33:]  # after IHDR, before the image data
    (tmp_path / "sixteen.png").write_bytes(with_exif)
    eight, sixteen = load_image(tmp_path / "eight.png"), load_image(tmp_path / "sixteen.png")
    assert sixteen.bit_depth == 16 and eight.bit_depth == 8
    assert eight.pixels.shape == ((3, 5, 3) if orientation >= 5 else (5, 3, 3))  # PIL did turn the 8-bit file
    assert np.array_equal(np.rint(sixteen.pixels * 65535) / 257, np.rint(eight.pixels * 255))
    left = Image.Exif()
    if sixteen.exif is not None:
        left.load(sixteen.exif)
    assert 0x0112 not in left  # orientation used up, so a viewer does not turn the result again


@pytest.mark.parametrize("orientation", [3, 6])
def test_sixteen_bit_colour_png_orientation_in_imagemagicks_text_chunk(tmp_path: Path, orientation: int) -> None:
    """Found by review: ImageMagick writes EXIF as hex text ("Raw profile type exif"); Pillow turns an 8-bit PNG by
    it, and the 16-bit path read only eXIf chunks, so the 16-bit copy came out turned otherwise."""
    from PIL.PngImagePlugin import PngInfo

    from vdsr.runtime.png16 import write_png16

    rgb8 = np.random.default_rng(orientation).integers(0, 256, (5, 3, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    block = exif.tobytes()
    text = f"\nexif\n{len(block):8d}\n{block.hex()}\n"
    info = PngInfo()
    info.add_text("Raw profile type exif", text, zip=True)
    Image.fromarray(rgb8).save(tmp_path / "eight.png", pnginfo=info)
    png = write_png16(rgb8.astype(np.uint16) * 257)
    chunk = b"Raw profile type exif\0" + text.encode("latin-1")
    (tmp_path / "sixteen.png").write_bytes(png[:33] + png_chunk(b"tEXt", chunk) + png[33:])
    eight, sixteen = load_image(tmp_path / "eight.png"), load_image(tmp_path / "sixteen.png")
    assert sixteen.bit_depth == 16 and eight.pixels.shape == ((3, 5, 3) if orientation >= 5 else (5, 3, 3))
    assert np.array_equal(np.rint(sixteen.pixels * 65535) / 257, np.rint(eight.pixels * 255))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_sixteen_bit_colour_tiff_is_turned_upright_once(tmp_path: Path, orientation: int) -> None:
    """Found by review: Pillow turns a TIFF upright as it loads it, and the 16-bit path turned it again (a
    portrait photo came out landscape, orientation 3 upside down). As its 8-bit copy is turned, and as PIL turns it."""
    import tifffile

    rgb8 = np.random.default_rng(orientation).integers(0, 256, (5, 3, 3), dtype=np.uint8)
    tag = [(0x0112, "H", 1, orientation, True)]
    tifffile.imwrite(tmp_path / "eight.tif", rgb8, photometric="rgb", extratags=tag)
    tifffile.imwrite(tmp_path / "sixteen.tif", rgb8.astype(np.uint16) * 257, photometric="rgb", extratags=tag)
    eight, sixteen = load_image(tmp_path / "eight.tif"), load_image(tmp_path / "sixteen.tif")
    assert sixteen.bit_depth == 16 and eight.bit_depth == 8
    with Image.open(tmp_path / "eight.tif") as image:
        assert np.array_equal(np.rint(eight.pixels * 255), np.asarray(ImageOps.exif_transpose(image)))
    assert np.array_equal(np.rint(sixteen.pixels * 65535) / 257, np.rint(eight.pixels * 255))


def test_sixteen_bit_colour_png_values(tmp_path: Path) -> None:
    from vdsr.runtime.png16 import write_png16

    rgba = np.random.default_rng(0).integers(0, 65536, (4, 7, 4), dtype=np.uint16)
    (tmp_path / "rgba16.png").write_bytes(write_png16(rgba, icc_profile=b"profile"))
    image = load_image(tmp_path / "rgba16.png")
    assert image.bit_depth == 16 and image.has_alpha and image.icc_profile == b"profile"
    assert np.array_equal(np.rint(image.pixels * 65535).astype(np.uint16), rgba)
    broken = bytearray((tmp_path / "rgba16.png").read_bytes())
    broken[-20] ^= 0xFF  # inside the image data: its CRC no longer matches
    (tmp_path / "broken16.png").write_bytes(bytes(broken))
    with pytest.raises(ImageError, match="broken16.png: corrupt 16-bit PNG"):
        load_image(tmp_path / "broken16.png")


def test_camera_jpeg_with_preview_colour_keys_and_cmyk_profiles(tmp_path: Path, rng: np.random.Generator) -> None:
    from vdsr.runtime.png16 import write_png16

    photo, preview = Image.fromarray(rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)), Image.new("RGB", (3, 4))
    photo.save(tmp_path / "camera.jpg", "MPO", save_all=True, append_images=[preview])  # a JPEG with an MPF preview
    assert Image.open(tmp_path / "camera.jpg").format == "MPO" and load_image(tmp_path / "camera.jpg").pixels.shape == (
        8,
        6,
        3,
    )
    Image.fromarray(np.array([[0, 10], [20, 30]], np.uint8)).save(tmp_path / "key_l.png", transparency=10)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "key_rgb.png", transparency=(0, 0, 0))
    gray_key, rgb_key = load_image(tmp_path / "key_l.png"), load_image(tmp_path / "key_rgb.png")
    assert gray_key.has_alpha and gray_key.alpha is not None and gray_key.alpha[0, 1] == 0 and gray_key.alpha[0, 0] == 1
    assert rgb_key.has_alpha and rgb_key.alpha is not None and np.all(rgb_key.alpha == 0)
    Image.new("CMYK", (4, 4), (0, 50, 100, 0)).save(tmp_path / "cmyk.jpg", icc_profile=b"a CMYK profile")
    assert load_image(tmp_path / "cmyk.jpg").icc_profile is None  # it does not describe the RGB we convert to
    png = write_png16(np.full((3, 4, 3), 4660, np.uint16))
    keyed = png[:33] + png_chunk(b"tRNS", bytes(6)) + png[33:]
    (tmp_path / "keyed16.png").write_bytes(keyed)  # a 16-bit colour key: once read by PIL at 8 bits, now 16
    keyed_image = load_image(tmp_path / "keyed16.png")
    assert keyed_image.bit_depth == 16 and keyed_image.pixels.shape == (3, 4, 4)


def test_only_the_supported_formats_are_ever_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An EPS file named like a PNG would make Pillow start Ghostscript: no plugin outside READ_FORMATS is consulted."""
    from PIL import EpsImagePlugin

    started: list[object] = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *args, **kwargs: started.append(args))
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\nshowpage\n%%EOF\n"
    (tmp_path / "x.png").write_bytes(eps)
    with pytest.raises(ImageError, match="not an image file in a supported format"):
        load_image(tmp_path / "x.png")
    assert not started


def test_links_to_fifos_are_refused_without_waiting(tmp_path: Path) -> None:
    """A FIFO opened for reading blocks until a writer comes: it must be refused, through a link too, not waited on."""
    import os
    import threading

    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "pipe.png").symlink_to(tmp_path / "pipe")
    outcome: list[BaseException] = []

    def read() -> None:
        with pytest.raises(ImageError) as raised:
            load_image(tmp_path / "pipe.png")
        outcome.append(raised.value)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=20)
    assert not reader.is_alive(), "load_image waited on a FIFO"
    assert "pipe.png: not a regular file" in str(outcome[0])
