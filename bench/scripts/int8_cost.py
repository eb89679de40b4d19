"""The int8 cost table of several int8 graphs, read from what `vdsr-export --int8` measured and recorded in each
graph's metadata (a results file, not a test):

    python -m vdsr.bench.scripts.int8_cost NAME=GRAPH ... --output bench/results/int8_cost_cpu [--previous FILE.json]

writes OUTPUT.json and OUTPUT.md: per graph, the recipe chosen (calibration method, convolutions kept in fp32), and
PSNR(fp32) - PSNR(int8) per Set5/Set14 cell, clean and noisy, against the bar.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from vdsr.bench.report import environment
from vdsr.files import atomic_write_text
from vdsr.model import Model

app = typer.Typer(add_completion=False, help=__doc__)


ROW_KEYS = {"cost_db", "bar_db", "within_bar", "kept_fp32", "calibration", "selection", "size_mb"}


def recorded(graph: Path) -> dict[str, Any]:
    model = Model.load(graph)
    facts = next(iter(model.graphs.values()))
    if facts.int8 is None:
        raise typer.BadParameter(f"{graph}: not an int8 graph with a measured cost (vdsr-export --int8)")
    return {
        "graph": str(graph),
        "architecture": model.architecture,
        "scales": list(model.scales),
        "weights_sha256": facts.weights_sha256,
        "calibration": facts.int8.calibration,
        "kept_fp32": facts.int8.kept_fp32,
        "selection": facts.int8.selection,
        "cost_db": facts.int8.cost_db,
        "bar_db": facts.int8.bar_db,
        "within_bar": facts.int8.within_bar,
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
    measured_before: list[dict[str, Any]] = []  # where the earlier columns were measured, and how
    if previous is not None:
        rows, measured_before = read_previous(previous)
    for item in graphs:
        name, _, path = item.partition("=")
        rows[name] = recorded(Path(path))
    command = shlex.join(
        ["python", "-m", "vdsr.bench.scripts.int8_cost", *graphs, "--output", str(output)]
        + (["--previous", str(previous)] if previous else [])
    )
    results: dict[str, Any] = {"graphs": rows, "environment": environment(command)}
    if measured_before:
        results["previous"] = measured_before
    commands = [str(e["command"]) for e in measured_before if "command" in e] + [command]
    text = "\n".join(
        [
            "# int8 PSNR cost (PSNR fp32 - PSNR int8, dB; negative: int8 scored higher)",
            "",
            *table(rows),
            "",
            *(f"Command: `{c}`" for c in commands),
            "",
        ]
    )
    atomic_write_text(output.with_suffix(".json"), json.dumps(results, indent=1) + "\n")
    atomic_write_text(output.with_suffix(".md"), text)
    typer.echo(text)


def read_previous(path: Path) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The columns and environments of a results file this tool wrote; a usage error naming the file otherwise."""
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        rows, before = earlier["graphs"], [*earlier.get("previous", []), earlier["environment"]]
        ok = isinstance(rows, dict) and all(sound_row(r) for r in rows.values())
        if not ok or not all(isinstance(e, dict) for e in before):
            raise ValueError(f"each graph needs {', '.join(sorted(ROW_KEYS))}")
        return {name: dict(row) for name, row in rows.items()}, before
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise typer.BadParameter(f"{path}: not a results file of vdsr.bench.scripts.int8_cost ({error})") from error


def sound_row(row: object) -> bool:
    """A column as `recorded` makes it: every key, costs and bars as numbers by cell and input kind."""
    if not isinstance(row, dict) or not ROW_KEYS <= set(row):
        return False
    maps = [row["cost_db"], row["bar_db"]]
    return all(isinstance(m, dict) and all(isinstance(v, (int, float)) for v in m.values()) for m in maps)


def table(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The Markdown table: a column per graph, a row per cell any graph was measured in, then each one's recipe."""
    cells = list(dict.fromkeys(cell for r in rows.values() for cell in r["cost_db"]))  # every model's, in order
    bars = {kind: bar for r in rows.values() for kind, bar in r["bar_db"].items()}
    lines = ["| cell | bar (dB) | " + " | ".join(rows) + " |", "|---|---|" + "---|" * len(rows)]
    for cell in cells:
        costs = [f"{r['cost_db'][cell]:+.4f}" if cell in r["cost_db"] else "–" for r in rows.values()]
        lines.append(f"| {cell} | {bars.get(cell.rsplit(' ', 1)[-1], '?')} | " + " | ".join(costs) + " |")
    for key in ("within_bar", "kept_fp32", "calibration", "selection", "size_mb"):
        lines.append(f"| {key} | | " + " | ".join(str(r[key]).replace("|", "/") for r in rows.values()) + " |")
    return lines


if __name__ == "__main__":
    app()
