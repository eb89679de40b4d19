"""Images this project draws, so their licence is its own: the README's sample images (a page of text and a scene
with edges, curves and fine stripes, each drawn at twice the size and reduced with the MATLAB bicubic, as
low-resolution images are made for the benchmark), and a photo-like test image for speed measurements (the cost
does not depend on the content). Deterministic: a test checks the committed samples are what this draws.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from vdsr.runtime.resize import imresize

TEXT = (
    "Accurate Image Super-Resolution Using Very",
    "Deep Convolutional Networks. We present a",
    "highly accurate single-image super-resolution",
    "method. Our method uses a very deep network",
    "inspired by VGG-net used for ImageNet.",
    "0123456789  +-x/=  (a) [b] {c}  #vdsr",
)


def document() -> Image.Image:
    page = Image.new("L", (480, 200), 238)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=17)
    for i, line in enumerate(TEXT):
        draw.text((14, 12 + 30 * i), line, fill=28, font=font)
    return page


def scene() -> Image.Image:
    w, h = 480, 320
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    sky = np.stack([90 + 60 * y / h, 140 + 60 * y / h, 230 - 30 * y / h], axis=-1)
    image = Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((330, 30, 410, 110), fill=(250, 220, 90))
    draw.polygon(
        [(0, 230), (90, 120), (170, 200), (260, 100), (380, 220), (480, 150), (480, 320), (0, 320)], fill=(70, 110, 70)
    )
    for row in range(8):  # a brick wall
        for col in range(-1, 12):
            left = 20 + col * 40 + (20 if row % 2 else 0)
            draw.rectangle((left, 240 + row * 10, left + 37, 247 + row * 10), fill=(170, 80, 60))
    for i in range(12):  # fine fence posts and wires
        draw.line((30 + 9 * i, 170, 30 + 9 * i, 235), fill=(60, 40, 30), width=2)
    for r in range(4, 60, 5):  # rings: edges at every angle
        draw.ellipse((400 - r, 250 - r, 400 + r, 250 + r), outline=(255, 255, 255), width=2)
    return image


def reduced(image: Image.Image) -> NDArray[np.uint8]:
    """Half size with MATLAB's bicubic (antialiased), rounded to 8 bits, as (H, W, C)."""
    pixels = np.asarray(image, dtype=np.float64)
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    out: NDArray[np.uint8] = np.clip(np.rint(imresize(pixels, 0.5)), 0, 255).astype(np.uint8)
    return out


def samples() -> dict[str, NDArray[np.uint8]]:
    return {"document.png": reduced(document()), "scene.png": reduced(scene())}


def sample_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A deterministic photo-like RGB image: smooth gradients, edges and fine texture (the cost does not depend on
    content; the encoder's does a little)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    rng = np.random.default_rng(seed)
    base = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin(x / 37.0) * np.cos(y / 23.0)], axis=-1)
    texture = rng.normal(0, 0.04, (height, width, 3))
    return np.clip(np.rint((0.8 * base + 0.1 + texture) * 255), 0, 255).astype(np.uint8)
