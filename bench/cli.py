"""`vdsr-bench`: the paper's PSNR/SSIM/time table for chosen data sets, scales and methods."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from vdsr.bench.datasets import DATA_DIR_ENV, Dataset, resolve_dataset
from vdsr.bench.harness import (
    Method,
    MethodRunner,
    method_runner,
    per_scale,
    run_bench,
    shipped_weights,
    weights_runner,
)
from vdsr.bench.protocol import parse_scales
from vdsr.bench.report import (
    COMPARISON_HEADER,
    comparison_rows,
    environment,
    to_csv,
    to_json,
    to_markdown,
    write_report,
)
from vdsr.console import Command, error_console, exit_on_errors, make_app, print_error, safe, version_option
from vdsr.errors import EXIT_FAILED, UsageError, VdsrError
from vdsr.files import sha256_file, unwritable_folder

app = make_app(__doc__)


def check_writable(path: Path | None, option: str) -> None:
    """Fail before a long run, not after it: the report's folder must exist or be creatable, and be writable."""
    if path is None:
        return
    if len(path.name.encode()) > 255:  # most file systems' limit on one name
        raise UsageError(f"{option}: cannot write {path}: the file name is too long")
    if path.is_dir():
        raise UsageError(f"{option}: {path} is a folder; give a file path")
    problem = unwritable_folder(path.parent)
    if problem:
        raise UsageError(f"{option}: {problem}")


@app.command(cls=Command)
def main(
    dataset: Annotated[
        list[str],
        typer.Option(
            "--dataset", "-d", help="Set5, Set14, B100, Urban100, T91, BSD200, or a folder of images. Repeatable."
        ),
    ],
    scale: Annotated[list[str], typer.Option("--scale", "-s", help="Repeatable or comma list.")] = ["2,3,4"],
    method: Annotated[list[Method], typer.Option("--method", "-m", help="Repeatable.")] = [Method.bicubic],
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="Folder holding the known sets, one subfolder each.", show_default=f"${DATA_DIR_ENV}"
        ),  # fmt: skip
    ] = None,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Write results, per-image scores, environment.", show_default="not written"),
    ] = None,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="Write the per-cell table as CSV.", show_default="not written")
    ] = None,
    weights: Annotated[
        list[Path] | None,
        typer.Option(
            "--weights",
            help="Weights (.onnx or .safetensors) for vdsr/srcnn: each serves the method it holds, at the scales it"
            " was trained for (SRCNN: one file per scale). Repeatable.",
            show_default="the shipped models",
        ),
    ] = None,
    markdown_path: Annotated[
        Path | None,
        typer.Option("--markdown", help="Write the comparison table as Markdown.", show_default="not written"),
    ] = None,
    version: Annotated[bool, version_option()] = False,
) -> None:
    """Score methods with the VDSR paper's protocol (MATLAB bicubic, BT.601 Y, shave = scale) next to its Table 3."""
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)  # piped or captured: no terminal width to fit, so do not squeeze the table
    err = error_console()
    with exit_on_errors(err):
        scales = parse_scales(scale)
        for path, option in ((json_path, "--json"), (csv_path, "--csv"), (markdown_path, "--markdown")):
            check_writable(path, option)
    env = environment(shlex.join(["vdsr-bench", *sys.argv[1:]]))
    datasets: list[Dataset] = []
    failed = False
    for spec in dataset:
        try:
            resolved = resolve_dataset(spec, data_dir)
        except VdsrError as error:
            print_error(err, error)
            failed = True
            continue
        if any(d.name == resolved.name for d in datasets):  # results are keyed by name: two "photos" would merge
            print_error(err, f"{spec}: another --dataset is already named {resolved.name!r}")
            failed = True
            continue
        datasets.append(resolved)
    methods = list(dict.fromkeys(method))
    learnt = [m.value for m in methods if m is not Method.bicubic]
    given: list[tuple[Path, MethodRunner]] = []  # each file goes to the method whose architecture it holds
    unreadable = False
    for path in weights or []:
        try:
            given.append((path, weights_runner(path)))
        except VdsrError as error:
            print_error(err, error)
            failed = unreadable = True
    for path, runner in given:
        if runner.name not in learnt:
            print_error(err, f"{path} holds {runner.name} weights, not {' or '.join(learnt) or 'a learnt method'}")
            failed = True
    runners = []
    sources: dict[str, list[dict[str, str]]] = {}  # which files each learnt method ran: the results name them
    for m in methods:
        try:
            if m is Method.bicubic:
                runners.append(method_runner(m))
                continue
            if weights:
                mine = [(p, r) for p, r in given if r.name == m.value]
            else:
                mine = [(p, weights_runner(p)) for p in shipped_weights(m)]
            if not mine and unreadable:  # the unreadable file may have been this method's: its error is already out
                continue
            if not mine:
                raise UsageError(
                    f"no --weights for {m.value}: give weights for every learnt method, or none for the shipped ones"
                )
            runners.append(per_scale(m, mine))
            sources[m.value] = [{"file": str(p), "sha256": sha256_file(p)} for p, _ in mine]
        except VdsrError as error:
            print_error(err, error)
            failed = True
    env["weights"] = sources
    total = sum(len(d.files) for d in datasets) * len(scales) * len(runners)
    columns = (TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with exit_on_errors(err), Progress(*columns, console=err, transient=True) as progress:  # a backend failure: 4
        task = progress.add_task("bench", total=total)
        run = run_bench(datasets, scales, runners, on_progress=lambda steps: progress.advance(task, steps))
    table = Table(*COMPARISON_HEADER, title="PSNR / SSIM on Y vs Kim et al. 2016, Table 3", box=box.SIMPLE_HEAD)
    for row in comparison_rows(run.cells):
        table.add_row(*row)
    out.print(table)
    for note in run.left_out:
        err.print(f"left out: {safe(note)}")
    for failure in run.failures:
        print_error(err, failure.error, "failed")
    reports: list[tuple[Path | None, Callable[[], str]]] = [
        (json_path, lambda: to_json(run, env)),
        (csv_path, lambda: to_csv(run)),
        (markdown_path, lambda: to_markdown(run, env)),
    ]
    for path, render in reports:
        if path is None:
            continue
        try:
            write_report(path, render())
        except OSError as error:
            print_error(err, f"{path}: cannot write ({error.strerror or error})")
            failed = True
            continue
        err.print(f"wrote {safe(path)}")
    if failed or run.failures:
        raise typer.Exit(EXIT_FAILED)
