"""The table that says when to use vdsr_real: it beside the shipped vdsr and bicubic on real small images (JPEG q75,
noise sigma 5) and on clean ones at the paper's scales and between them, read from vdsr-bench results files, each cell
held against its bar. Set5 and Set14 are where the model was tuned; B100 is reported only.

    for d in "bicubic -s 1.5,2,2.5,3,3.5,4" "jpeg:75 -s 2,3,4" "noise:5 -s 2"; do set -- $d
      vdsr-bench -d Set5 -d Set14 -d B100 --degradation $1 $2 $3 -m bicubic -m vdsr -m vdsr_real \\
        --json bench/results/real_inputs_${1/:/}.json; done
    python -m vdsr.bench.scripts.real_inputs bench/results/real_inputs_*.json --markdown bench/results/real_inputs.md
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from vdsr.files import atomic_write_text

TUNED_ON = ("Set5", "Set14")  # the bars hold here; other sets are reported


@dataclass(frozen=True)
class Bar:
    """vdsr_real's PSNR must be at least bicubic's + `over_bicubic` and vdsr's + `over_vdsr` (None: no such bar)."""

    over_bicubic: float | None
    over_vdsr: float | None

    def met(self, psnr: dict[str, float]) -> bool:
        real = psnr["vdsr_real"]
        return (self.over_bicubic is None or real >= psnr["bicubic"] + self.over_bicubic) and (
            self.over_vdsr is None or real >= psnr["vdsr"] + self.over_vdsr
        )

    def __str__(self) -> str:
        parts = [
            f"bicubic {self.over_bicubic:+.2f}" if self.over_bicubic is not None else "",
            f"vdsr {self.over_vdsr:+.2f}" if self.over_vdsr is not None else "",
        ]
        return " and ".join(p for p in parts if p)


def bar_for(degradation: str, scale: float) -> Bar | None:
    """Issue 18's bars for a cell (degradation, scale), or None for a cell with none."""
    if degradation == "jpeg:75" and scale in (2, 3, 4):
        return Bar(0.5, 0.3)
    if degradation == "bicubic" and scale in (2, 3, 4):
        return Bar(None, -0.10)
    if degradation == "bicubic" and scale in (1.5, 2.5, 3.5):
        return Bar(1.0, 0.0)
    if degradation == "noise:5" and scale == 2:
        return Bar(0.5, None)
    return None


def read_cells(paths: list[Path]) -> dict[tuple[str, str, float], dict[str, tuple[float, float]]]:
    """(dataset, degradation, scale) -> method -> (PSNR, SSIM), from vdsr-bench --json files."""
    cells: dict[tuple[str, str, float], dict[str, tuple[float, float]]] = {}
    for path in paths:
        for r in json.loads(path.read_text(encoding="utf-8"))["results"]:
            key = (r["dataset"], r.get("degradation", "bicubic"), float(r["scale"]))
            cells.setdefault(key, {})[r["method"]] = (r["psnr"], r["ssim"])
    return cells


def table(cells: dict[tuple[str, str, float], dict[str, tuple[float, float]]]) -> tuple[str, bool]:
    """The Markdown table, and whether every bar of the sets tuned on is met."""
    lines = [
        "| set | small image | scale | bicubic | vdsr | vdsr_real | bar (vdsr_real at least) | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    all_met = True
    order = {name: n for n, name in enumerate((*TUNED_ON, "B100"))}
    for (dataset, degradation, scale), methods in sorted(
        cells.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][0], kv[0][1] != "bicubic", kv[0][1], kv[0][2])
    ):
        if not {"bicubic", "vdsr", "vdsr_real"} <= set(methods):
            continue
        bar = bar_for(degradation, scale)
        met = bar.met({m: v[0] for m, v in methods.items()}) if bar else None
        if met is False and dataset in TUNED_ON:
            all_met = False
        shown = "-" if met is None else ("yes" if met else "**no**") + ("" if dataset in TUNED_ON else " (reported)")
        values = " | ".join(f"{methods[m][0]:.2f} / {methods[m][1]:.4f}" for m in ("bicubic", "vdsr", "vdsr_real"))
        lines.append(f"| {dataset} | {degradation} | x{scale:g} | {values} | {bar or '-'} | {shown} |")
    return "\n".join(lines) + "\n", all_met and len(lines) > 2  # an empty table meets nothing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="vdsr-bench --json files")
    parser.add_argument("--markdown", type=Path, help="write the table here")
    args = parser.parse_args(argv)
    text, all_met = table(read_cells(args.results))
    heading = "PSNR / SSIM on Y (the paper's protocol; ONNX Runtime CPU fp32). Bars hold on Set5 and Set14.\n\n"
    if args.markdown:
        atomic_write_text(args.markdown, heading + text)
    sys.stdout.write(text)
    return 0 if all_met else 1


if __name__ == "__main__":
    raise SystemExit(main())
