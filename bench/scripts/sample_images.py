"""Writes the sample images the README's first command upscales (vdsr.bench.drawn):

python -m vdsr.bench.scripts.sample_images bench/samples
"""

from __future__ import annotations

from pathlib import Path

import typer

from vdsr.bench.drawn import samples
from vdsr.runtime.images import save_image


def main(folder: Path) -> None:
    for name, pixels in samples().items():
        save_image(folder / name, pixels)
        typer.echo(f"wrote {folder / name} ({pixels.shape[1]}x{pixels.shape[0]})")


if __name__ == "__main__":
    typer.run(main)
