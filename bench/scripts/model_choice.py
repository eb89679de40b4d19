"""Which shipped model suits which input, and whether `--model auto` (the default) picks it (issue 38, part 4).

Photos no model was trained or tuned on: scikit-image's bundled ones (read at run time, never committed), cut to even
sizes, halved with the MATLAB bicubic in RGB, rounded to 8 bits and saved as PNG, JPEG q90 and JPEG q75 (Pillow,
4:2:0). Each file is upscaled x2 back by `vdsr`, `vdsr_real` and `auto` through vdsr.Upscaler.upscale_folder (the
whole runtime: decoding, colour, tiles, encoding as PNG), on the default precision; PSNR on BT.601 Y against the
photo, 2 pixels shaved. The goal: on every file, auto within 0.05 dB of the better of the two.

    python -m vdsr.bench.scripts.model_choice --out bench/results/model_choice
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from vdsr.bench.metrics import psnr
from vdsr.bench.report import environment
from vdsr.files import atomic_write_text
from vdsr.runtime.color import rgb_to_y
from vdsr.runtime.resize import imresize
from vdsr.runtime.upscaler import Upscaler

PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "moon", "page", "hubble_deep_field")
KINDS: dict[str, dict[str, Any]] = {"png": {}, "q90.jpg": {"quality": 90}, "q75.jpg": {"quality": 75}}
MODELS = ("vdsr", "vdsr_real", "auto")
GOAL_DB = 0.05


def photos(folder: Path) -> dict[str, NDArray[np.uint8]]:
    """Each photo's HR (RGB, even size), and its halves written into `folder` in every kind."""
    import skimage.data  # the test extra's scikit-image: its bundled photos

    hrs = {}
    for name in PHOTOS:
        photo = getattr(skimage.data, name)()
        photo = np.repeat(photo[..., None], 3, axis=2) if photo.ndim == 2 else photo[..., :3]
        h, w = (n - n % 2 for n in photo.shape[:2])
        hrs[name] = photo[:h, :w]
        small = np.clip(np.rint(imresize(hrs[name] / 255.0, 0.5) * 255), 0, 255).astype(np.uint8)
        for kind, options in KINDS.items():
            Image.fromarray(small).save(folder / f"{name}.{kind}", **options)
    return hrs


def y_psnr(result: NDArray[np.uint8], hr: NDArray[np.uint8]) -> float:
    return psnr(rgb_to_y(result.astype(np.float64), peak=255.0), rgb_to_y(hr.astype(np.float64), peak=255.0), border=2)


def measure(precision: str) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "in"
        inputs.mkdir()
        hrs = photos(inputs)
        for model in MODELS:
            with Upscaler(model, precision=precision) as upscaler:
                report = upscaler.upscale_folder(inputs, 2, Path(tmp) / model, fmt="png")
                if report.failed:
                    raise RuntimeError(str(report))
        rows: list[dict[str, object]] = []
        for file in sorted(inputs.iterdir()):
            name, kind = file.name.split(".", 1)
            row: dict[str, object] = {"photo": name, "input": kind}
            for model in MODELS:
                out = np.asarray(Image.open((Path(tmp) / model / file.name).with_suffix(".png")).convert("RGB"))
                row[model] = round(y_psnr(out, hrs[name]), 3)
            best = max(float(row["vdsr"]), float(row["vdsr_real"]))  # type: ignore[arg-type]
            row["auto_minus_best"] = round(float(row["auto"]) - best, 3)  # type: ignore[arg-type]
            rows.append(row)
    return rows


def markdown(rows: list[dict[str, object]], env: dict[str, object]) -> str:
    lines = [
        "# `--model auto` against the two shipped models, x2, scikit-image photos halved (PSNR on Y, dB)",
        "",
        f"Machine: {env['cpu']} ({env['cpu_count']} cores; {', '.join(map(str, env['cpu_flags']))}); "  # type: ignore[call-overload]
        f"vdsr {env['vdsr']}. Command: `{env['command']}`.",
        "",
        "| photo | input | vdsr | vdsr_real | auto | auto - best |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['photo']} | {r['input']} | {r['vdsr']:.3f} | {r['vdsr_real']:.3f} | {r['auto']:.3f} | "
        f"{r['auto_minus_best']:+.3f} |"
        for r in rows
    ]
    worst = min(float(r["auto_minus_best"]) for r in rows)  # type: ignore[arg-type]
    verdict = "met" if worst >= -GOAL_DB else "NOT met"
    lines += ["", f"Worst auto - best: {worst:+.3f} dB; goal (>= -{GOAL_DB} dB on every file): {verdict}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--out", type=Path, default=Path("bench/results/model_choice"))
    args = parser.parse_args()
    env = environment(shlex.join(["python", "-m", "vdsr.bench.scripts.model_choice", *sys.argv[1:]]))
    rows = measure(args.precision)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "model_choice.json", json.dumps({"environment": env, "rows": rows}, indent=1))
    atomic_write_text(args.out / "model_choice.md", markdown(rows, env))
    print(markdown(rows, env))


if __name__ == "__main__":
    main()
