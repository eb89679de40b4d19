"""The int8 cost table of several int8 graphs, read from what `vdsr-export --int8` measured and recorded in each
graph's metadata (a results file, not a test):

    python -m vdsr.bench.int8_cost NAME=GRAPH ... --output bench/results/int8_cost_cpu [--previous FILE.json]

writes OUTPUT.json and OUTPUT.md: per graph, the recipe chosen (calibration method, convolutions kept in fp32), and
PSNR(fp32) - PSNR(int8) per Set5/Set14 cell, clean and noisy, against the bar.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated, Any

import onnx
import typer

from vdsr.bench.report import environment
from vdsr.files import atomic_write_text

app = typer.Typer(add_completion=False, help=__doc__)


def recorded(graph: Path) -> dict[str, Any]:
    meta = {p.key: p.value for p in onnx.load(str(graph)).metadata_props}
    if meta.get("precision") != "int8" or "int8_bar_db" not in meta:
        raise typer.BadParameter(f"{graph}: not an int8 graph with a measured cost (vdsr-export --int8)")
    return {
        "graph": str(graph),
        "architecture": meta["architecture"],
        "scales": json.loads(meta["scales"]),
        "weights_sha256": meta["weights_sha256"],
        "calibration": meta["calibration"],
        "kept_fp32": json.loads(meta["int8_kept_fp32"]),
        "selection": meta["int8_selection"],
        "cost_db": json.loads(meta["int8_cost_db"]),
        "bar_db": json.loads(meta["int8_bar_db"]),
        "within_bar": meta["int8_within_bar"] == "true",
        "size_mb": round(graph.stat().st_size / 1e6, 2),
    }


@app.command()
def main(
    graphs: Annotated[list[str], typer.Argument(help="NAME=GRAPH: a label and an int8 ONNX graph.")],
    output: Annotated[Path, typer.Option(help="Writes OUTPUT.json and OUTPUT.md.")],
    previous: Annotated[
        Path | None,
        typer.Option(help="A results file of this tool: its columns come first, as recorded (graphs may be gone)."),
    ] = None,
) -> None:
    rows: dict[str, dict[str, Any]] = {}
    earlier: dict[str, Any] = {}
    if previous is not None:
        try:
            earlier = json.loads(previous.read_text(encoding="utf-8"))
            rows |= {name: dict(row) for name, row in earlier["graphs"].items()}
            earlier["environment"] = dict(earlier["environment"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise typer.BadParameter(f"{previous}: not a results file of vdsr.bench.int8_cost ({error})") from error
    for item in graphs:
        name, _, path = item.partition("=")
        rows[name] = recorded(Path(path))
    command = shlex.join(["python", "-m", "vdsr.bench.int8_cost", *graphs, "--output", str(output)]
                         + (["--previous", str(previous)] if previous else []))  # fmt: skip
    measured_before: list[dict[str, Any]] = [*earlier.get("previous", []), earlier["environment"]] if earlier else []
    results: dict[str, Any] = {"graphs": rows, "environment": environment(command)}
    if measured_before:  # where the earlier columns were measured, and how
        results["previous"] = measured_before
    atomic_write_text(output.with_suffix(".json"), json.dumps(results, indent=1) + "\n")
    cells = list(dict.fromkeys(cell for r in rows.values() for cell in r["cost_db"]))  # every model's, in order
    bars = next(iter(rows.values()))["bar_db"]
    lines = ["| cell | bar (dB) | " + " | ".join(rows) + " |", "|---|---|" + "---|" * len(rows)]
    for cell in cells:
        costs = [f"{r['cost_db'][cell]:+.4f}" if cell in r["cost_db"] else "–" for r in rows.values()]
        lines.append(f"| {cell} | {bars[cell.rsplit(' ', 1)[1]]} | " + " | ".join(costs) + " |")
    for key in ("within_bar", "kept_fp32", "calibration", "selection", "size_mb"):
        lines.append(f"| {key} | | " + " | ".join(str(r[key]).replace("|", "/") for r in rows.values()) + " |")
    commands = [e["command"] for e in measured_before if "command" in e] + [command]
    text = "\n".join(["# int8 PSNR cost (PSNR fp32 - PSNR int8, dB; negative: int8 scored higher)", "", *lines, "",
                      *(f"Command: `{c}`" for c in commands), ""])  # fmt: skip
    atomic_write_text(output.with_suffix(".md"), text)
    typer.echo(text)


if __name__ == "__main__":
    app()
