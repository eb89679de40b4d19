"""What the shipped VDSR does to real small images that were JPEG-compressed, next to clean ones (the README's note on
inputs; issue 18 builds a model for them).

Photos: scikit-image's bundled sample photos (read at run time, never committed). For each: HR modcropped to the
scale; the small image is its MATLAB-bicubic reduction in RGB, rounded to 8 bits (clean), or that saved as a JPEG of
quality Q by Pillow (4:2:0) and decoded. Both are upscaled by bicubic and by `vdsr.Upscaler` (the runtime's colour
pipeline: Y through the network); PSNR on BT.601 Y against the HR, `scale` pixels shaved.

    python -m vdsr.bench.scripts.jpeg_inputs --json bench/results/jpeg_inputs.json
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import sys
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from vdsr.bench.metrics import psnr
from vdsr.bench.report import environment
from vdsr.files import atomic_write_text
from vdsr.runtime.color import rgb_to_y
from vdsr.runtime.resize import imresize
from vdsr.runtime.upscaler import Upscaler

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


def y_psnr(result: NDArray[np.uint8], hr: NDArray[np.uint8], scale: int) -> float:
    return psnr(
        rgb_to_y(result.astype(np.float64), peak=255.0), rgb_to_y(hr.astype(np.float64), peak=255.0), border=scale
    )


def jpeg(pixels: NDArray[np.uint8], quality: int) -> NDArray[np.uint8]:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def measure(scale: int, quality: int) -> list[dict[str, object]]:
    import skimage.data  # the test extra's scikit-image: its bundled photos

    rows = []
    with Upscaler("vdsr", precision="fp32") as upscaler:
        for name in PHOTOS:
            photo = getattr(skimage.data, name)()
            h, w = (n - n % scale for n in photo.shape[:2])
            hr = photo[:h, :w]
            small = np.clip(np.rint(imresize(hr / 255.0, 1 / scale) * 255), 0, 255).astype(np.uint8)
            row: dict[str, object] = {"photo": name, "size": f"{w}x{h}"}
            for kind, lr in (("clean", small), (f"jpeg{quality}", jpeg(small, quality))):
                bicubic = np.clip(np.rint(imresize(lr / 255.0, scale) * 255), 0, 255).astype(np.uint8)
                vdsr = upscaler.upscale(lr, scale)
                row[f"{kind}_bicubic"] = round(y_psnr(bicubic, hr, scale), 3)
                row[f"{kind}_vdsr"] = round(y_psnr(vdsr, hr, scale), 3)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--quality", type=int, default=75)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = measure(args.scale, args.quality)
    jpeg_key = f"jpeg{args.quality}"
    print(f"photo, size: clean bicubic / vdsr (gain); JPEG q{args.quality} bicubic / vdsr (gain), PSNR dB on Y")
    for r in rows:
        gains = [float(r[f"{k}_vdsr"]) - float(r[f"{k}_bicubic"]) for k in ("clean", jpeg_key)]  # type: ignore[arg-type]
        print(
            f"{r['photo']}, {r['size']}: {r['clean_bicubic']} / {r['clean_vdsr']} ({gains[0]:+.2f}); "
            f"{r[f'{jpeg_key}_bicubic']} / {r[f'{jpeg_key}_vdsr']} ({gains[1]:+.2f})"
        )
    if args.json:
        env = environment(shlex.join(["python", "-m", "vdsr.bench.scripts.jpeg_inputs", *sys.argv[1:]]))
        document = {"scale": args.scale, "quality": args.quality, "rows": rows, "environment": env}
        atomic_write_text(args.json, json.dumps(document, indent=1) + "\n")


if __name__ == "__main__":
    main()
