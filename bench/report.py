"""Benchmark results as files (JSON for tools, CSV, Markdown) and the comparison with the paper all views share."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
from dataclasses import asdict
from pathlib import Path

import numpy as np

from vdsr._version import __commit_id__, __version__
from vdsr.bench.harness import BenchRun, CellResult
from vdsr.bench.paper import paper_value
from vdsr.files import atomic_write_text
from vdsr.runtime.machine import NOTABLE_CPU_FLAGS, cpu_features, cpu_model, gpu_names

COMPARISON_HEADER = (
    "dataset",
    "scale",
    "method",
    "images",
    "PSNR",
    "vs bicubic",
    "paper",
    "Δ dB",
    "SSIM",
    "paper",
    "Δ",
    "s/image",
    "backend",
)


def environment(command: str) -> dict[str, object]:
    flags = cpu_features()
    return {
        "vdsr": __version__,
        "git_commit": __commit_id__.removeprefix("g") if __commit_id__ else None,  # the version ends .dDATE if dirty
        "command": command,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_flags": [flag for flag in NOTABLE_CPU_FLAGS if flag in flags],  # what decides speed here
        "cpu_count": os.cpu_count(),
        "gpu": gpu_names(),
    }


def _paper_columns(cell: CellResult) -> tuple[float | None, float | None]:
    """The paper's PSNR and SSIM for a cell of a verified known set under the paper's degradation; none for a folder,
    whatever its name, or for JPEG or noisy small images."""
    paper = (
        paper_value(cell.dataset, cell.scale, cell.method) if cell.verified and cell.degradation == "bicubic" else None
    )
    return (paper[0], paper[1]) if paper else (None, None)


def shown_name(cell: CellResult) -> str:
    return cell.dataset if cell.verified else f"{cell.dataset} (unverified folder)"


def _finite(record: dict[str, object]) -> dict[str, object]:
    """Infinite PSNR (an exact reconstruction) becomes null: strict JSON has no Infinity."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}


def to_json(run: BenchRun, env: dict[str, object]) -> str:
    results = []
    for cell in run.cells:
        paper_psnr, paper_ssim = _paper_columns(cell)
        results.append(_finite({**asdict(cell), "paper_psnr": paper_psnr, "paper_ssim": paper_ssim}))
    document = {
        "results": results,
        "per_image": [_finite(asdict(r)) for r in run.images],
        "failures": [asdict(f) for f in run.failures],
        "left_out": run.left_out,
        "environment": env,
    }
    return json.dumps(document, indent=1, allow_nan=False) + "\n"


def to_csv(run: BenchRun) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    gains = gain_over_bicubic(run.cells)
    writer.writerow(
        [
            "dataset",
            "verified",
            "degradation",
            "scale",
            "method",
            "images",
            "psnr",
            "gain_over_bicubic",
            "paper_psnr",
            "ssim",
            "paper_ssim",
            "seconds_per_image",
            "backend",
            "precision",
        ]
    )
    for cell in run.cells:
        paper_psnr, paper_ssim = _paper_columns(cell)
        gain = gains.get(cell)
        writer.writerow(
            [
                cell.dataset,
                cell.verified,
                cell.degradation,
                cell.scale,
                cell.method,
                cell.images,
                f"{cell.psnr:.4f}",
                "" if gain is None else f"{gain:.4f}",
                paper_psnr,
                f"{cell.ssim:.5f}",
                paper_ssim,
                f"{cell.seconds_per_image:.6f}",
                cell.backend,
                cell.precision,
            ]
        )
    return out.getvalue()


def gain_over_bicubic(cells: list[CellResult]) -> dict[CellResult, float]:
    """PSNR gain of each learnt method's cell over bicubic on the same images (where bicubic was scored too)."""
    bicubic = {(c.dataset, c.scale): c for c in cells if c.method == "bicubic"}
    return {
        c: c.psnr - bicubic[c.dataset, c.scale].psnr
        for c in cells
        if c.method != "bicubic" and (c.dataset, c.scale) in bicubic and bicubic[c.dataset, c.scale].images == c.images
    }


def comparison_rows(cells: list[CellResult]) -> list[tuple[str, ...]]:
    """One row of strings per cell, matching COMPARISON_HEADER: ours, its gain over bicubic, the paper's and the
    difference (the paper's only for verified known sets)."""
    rows: list[tuple[str, ...]] = []
    gains = gain_over_bicubic(cells)
    for cell in cells:
        paper_psnr, paper_ssim = _paper_columns(cell)
        gain = gains.get(cell)
        rows.append(
            (
                shown_name(cell),
                f"x{cell.scale}",
                cell.method,
                str(cell.images),
                f"{cell.psnr:.3f}",
                "" if gain is None else f"{gain:+.2f}",
                "" if paper_psnr is None else f"{paper_psnr:.2f}",
                "" if paper_psnr is None else f"{cell.psnr - paper_psnr:+.3f}",
                f"{cell.ssim:.4f}",
                "" if paper_ssim is None else f"{paper_ssim:.4f}",
                "" if paper_ssim is None else f"{cell.ssim - paper_ssim:+.4f}",
                f"{cell.seconds_per_image:.4f}",
                f"{cell.backend} {cell.precision}",
            )
        )
    return rows


def to_markdown(run: BenchRun, env: dict[str, object]) -> str:
    lines = [
        "| " + " | ".join(COMPARISON_HEADER) + " |",
        "|" + "---|" * len(COMPARISON_HEADER),
        *("| " + " | ".join(row) + " |" for row in comparison_rows(run.cells)),
        "",
        f"Command: `{env['command']}`",
        "",
        "Paper: Kim, Lee & Lee, CVPR 2016, Table 3. Seconds per image: the method alone (LR luminance in, SR out), "
        "after a warm-up, without file decoding or scoring.",
    ]
    lines.append(
        f"Environment: vdsr {env['vdsr']}, Python {env['python']}, numpy {env['numpy']}, {env['cpu']} "
        f"({env['cpu_count']} cores){', GPU ' + ', '.join(env['gpu']) if env['gpu'] else ''}."  # type: ignore[arg-type]
    )
    if env.get("degradation", "bicubic") != "bicubic":
        lines += [
            "",
            f"Small images: {env['degradation']} (vdsr.bench.protocol.Degradation), not the paper's "
            "protocol: no paper values.",
        ]
    if run.left_out:
        lines += ["", "Left out:", *(f"- {note}" for note in run.left_out)]
    if run.failures:
        lines += ["", "Failures:", *(f"- {f.error}" for f in run.failures)]
    return "\n".join(lines) + "\n"


def write_report(path: Path, text: str) -> None:
    atomic_write_text(path, text)
