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
from rich.table import Table

from vdsr.bench.datasets import (
    DATA_DIR_ENV,
    KNOWN_SETS,
    Dataset,
    data_places,
    dataset_digest,
    download_dir,
    known_set_name,
    locate_set,
    resolve_dataset,
)
from vdsr.bench.download import download_set, set_manifest, source_for
from vdsr.bench.figures import plot, require_matplotlib, save_outputs
from vdsr.bench.harness import (
    Method,
    MethodRunner,
    Outputs,
    method_runner,
    per_scale,
    run_bench,
    self_ensemble_runner,
    shipped_weights,
    weights_runner,
)
from vdsr.bench.protocol import BICUBIC, parse_degradation
from vdsr.bench.report import (
    COMPARISON_HEADER,
    comparison_rows,
    environment,
    to_csv,
    to_json,
    to_markdown,
    write_report,
)
from vdsr.bench.resume import append_jsonl, open_jsonl, read_jsonl
from vdsr.catalogue import family_architecture
from vdsr.errors import EXIT_FAILED, UsageError, VdsrError
from vdsr.files import sha256_file, unwritable_folder
from vdsr.runtime.console import (
    Command,
    WorkProgress,
    error_console,
    exit_on_errors,
    make_app,
    print_error,
    require_modules,
    safe,
    version_option,
)
from vdsr.scale import parse_scales

app = make_app(__doc__)
DEFAULT_METHODS = (Method.bicubic, Method.srcnn, Method.vdsr)  # the paper's Table 3 columns, by the shipped models


def check_distinct(reports: dict[str, Path | None], *, inputs: list[Path]) -> None:
    """UsageError for two reports in one file (one would replace the other) or a report on an input of the run."""
    taken = {path.resolve(): "an input of this run" for path in inputs}
    for option, path in reports.items():
        if path is not None:
            if path.resolve() in taken:
                raise UsageError(f"{option}: {path} is {taken[path.resolve()]}")
            taken[path.resolve()] = f"also {option}"


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
            "--dataset",
            "-d",
            help="Set5, Set14, B100, Urban100, T91, BSD200, or a folder of images. Repeatable.",
            metavar="SET",
        ),
    ],
    scale: Annotated[list[str], typer.Option("--scale", "-s", help="Repeatable or comma list.", metavar="SCALES")] = [
        "2,3,4"
    ],
    method: Annotated[
        list[Method] | None,
        typer.Option(
            "--method",
            "-m",
            help="Repeatable.",
            show_default="bicubic, srcnn, vdsr; with --weights: bicubic and the methods the weights hold",
        ),
    ] = None,
    tta: Annotated[
        bool,
        typer.Option(
            "--tta",
            help="Also score each learnt method's geometric self-ensemble (the mean over 8 flips and rotations, "
            "about 10x the time) as its own method, e.g. vdsr+tta.",
        ),
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Folder holding the known sets, one subfolder each; a set not there is looked for in the per-user"
            " data folder.",
            show_default=f"${DATA_DIR_ENV}, then the per-user data folder",
        ),
    ] = None,
    download: Annotated[
        bool,
        typer.Option(
            "--download",
            help="Fetch each known --dataset found nowhere from its public copy into --data-dir (or the per-user"
            " data folder), every file checked against the manifest.",
        ),
    ] = False,
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
            metavar="FILE",
            help="Weights (.onnx or .safetensors) for vdsr/srcnn: each serves the method it holds, at the scales it"
            " was trained for (SRCNN: one file per scale). Repeatable.",
            show_default="the shipped models",
        ),
    ] = None,
    markdown_path: Annotated[
        Path | None,
        typer.Option("--markdown", help="Write the comparison table as Markdown.", show_default="not written"),
    ] = None,
    degradation_text: Annotated[
        str,
        typer.Option(
            "--degradation",
            help="How the small image is made: bicubic (the paper's protocol), jpeg:Q (a "
            "JPEG of quality Q) or noise:SIGMA (Gaussian noise, 8-bit levels); not bicubic: no paper "
            "column.",
            metavar="KIND",
        ),
    ] = "bicubic",
    jsonl: Annotated[
        Path | None,
        typer.Option(
            "--jsonl",
            help="Append each image's scores here as they come (JSON lines): an interrupted "
            "run keeps them, and --resume continues it.",
            show_default="not written",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run whose --jsonl file is given: scored images are kept.")
    ] = False,
    plot_path: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Draw PSNR against seconds per image, a panel per data set (PNG; needs the plot extra: matplotlib).",
            show_default="not drawn",
        ),
    ] = None,
    save_images: Annotated[
        Path | None,
        typer.Option(
            "--save-images",
            help="Write each method's output and an HR | bicubic | SRCNN | VDSR crop of "
            "each image's most detailed region here.",
            show_default="not written",
        ),
    ] = None,
    version: Annotated[bool, version_option()] = False,
) -> None:
    """Score methods with the VDSR paper's protocol (MATLAB bicubic, BT.601 Y, shave = scale) next to its Table 3."""
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)  # piped or captured: no terminal width to fit, so do not squeeze the table
    err = error_console()
    with exit_on_errors(err):  # everything that can be wrong with the request, before any scoring
        scales = parse_scales(scale)
        degradation = parse_degradation(degradation_text)
        report_files = {"--json": json_path, "--csv": csv_path, "--markdown": markdown_path, "--jsonl": jsonl}
        report_files["--plot"] = plot_path
        for option, path in report_files.items():
            check_writable(path, option)
        if plot_path is not None:
            require_matplotlib()
        if resume and jsonl is None:
            raise UsageError("--resume continues the run recorded in --jsonl FILE: give the file")
        if save_images is not None:
            problem = unwritable_folder(save_images)
            if problem:
                raise UsageError(f"--save-images: {problem}")
        if jsonl is not None and jsonl.exists() and jsonl.stat().st_size and not resume:
            raise UsageError(f"--jsonl: {jsonl} exists: pass --resume to continue that run, or give another file")
        methods, runners, sources = settle_runners(method, weights)
        if tta:
            runners += [self_ensemble_runner(r) for r in runners if r.name != Method.bicubic.value]
        if download:
            fetch_missing(dataset, data_dir, err)
        datasets = settle_datasets(dataset, data_dir)
        check_distinct(report_files, inputs=[f for d in datasets for f in d.files] + list(weights or []))
    env = environment(shlex.join(["vdsr-bench", *sys.argv[1:]]))
    env["weights"] = sources
    env["degradation"] = str(degradation)
    plan = {
        "datasets": [d.name for d in datasets],
        "scales": scales,
        "methods": [r.name for r in runners],
        "weights": sources,
        "degradation": str(degradation),
    }
    if jsonl is not None:  # a folder of that name, but other images: not resumed (a known set is verified already)
        plan["contents"] = [d.name if d.verified else dataset_digest(d) for d in datasets]
    with exit_on_errors(err):
        done = read_jsonl(jsonl, plan) if resume and jsonl is not None and jsonl.exists() else {}
    if done:
        err.print(f"resuming: {len(done)} image scores kept from {safe(jsonl)}")
    log = open_jsonl(jsonl, plan) if jsonl is not None else None
    failed_pictures: list[str] = []

    def save_or_say(outputs: Outputs, folder: Path) -> None:
        """The pictures of one image; one that cannot be written is an error line, and the run goes on."""
        try:
            save_outputs(outputs, folder)
        except VdsrError as error:
            print_error(err, error)
            failed_pictures.append(str(outputs.image))

    total = sum(len(d.files) for d in datasets) * len(scales) * len(runners)
    with exit_on_errors(err), WorkProgress(err, "scoring", total=total, unit="scores") as progress:  # backend: 4
        run = run_bench(
            datasets,
            scales,
            runners,
            on_progress=lambda steps: progress.update(advance=steps),
            done=done,
            on_image=lambda result: append_jsonl(log, result),
            on_outputs=None if save_images is None else lambda outputs: save_or_say(outputs, save_images),
            degradation=degradation,
        )
    if log is not None:
        log.close()
    if not run.cells and plot_path is not None:
        print_error(err, f"{plot_path}: nothing to plot, no cell was scored")
        plot_path = None
        failed_pictures.append("plot")
    title = "PSNR / SSIM on Y vs Kim et al. 2016, Table 3" + ("" if degradation == BICUBIC else f", LR: {degradation}")
    table = Table(*COMPARISON_HEADER, title=title, box=box.SIMPLE_HEAD)
    for row in comparison_rows(run.cells):
        table.add_row(*row)
    out.print(table)
    for note in run.left_out:
        err.print(f"left out: {safe(note)}")
    for failure in run.failures:
        print_error(err, failure.error, "failed")
    failed = bool(failed_pictures)
    reports: list[tuple[Path | None, Callable[[], None]]] = [
        (json_path, lambda: write_report(json_path, to_json(run, env))),  # type: ignore[arg-type]
        (csv_path, lambda: write_report(csv_path, to_csv(run))),  # type: ignore[arg-type]
        (markdown_path, lambda: write_report(markdown_path, to_markdown(run, env))),  # type: ignore[arg-type]
        (plot_path, lambda: plot(run.cells, plot_path)),  # type: ignore[arg-type]
    ]
    for path, write in reports:
        if path is None:
            continue
        try:
            write()
        except OSError as error:
            print_error(err, f"{path}: cannot write ({error.strerror or error})")
            failed = True
            continue
        err.print(f"wrote {safe(path)}")
    if save_images is not None:
        err.print(f"wrote the methods' outputs and comparison crops under {safe(save_images)}")
    if failed or run.failures:
        raise typer.Exit(EXIT_FAILED)


def settle_datasets(specs: list[str], data_dir: Path | None) -> list[Dataset]:
    """Every --dataset resolved and verified, or the first problem as an error (a misspelt name: bad usage)."""
    datasets: list[Dataset] = []
    for spec in specs:
        resolved = resolve_dataset(spec, data_dir)
        if any(d.name == resolved.name for d in datasets):  # results are keyed by name: two "photos" would merge
            raise UsageError(f"{spec}: another --dataset is already named {resolved.name!r}")
        datasets.append(resolved)
    return datasets


def fetch_missing(specs: list[str], data_dir: Path | None, err: Console) -> None:
    """--download: each known set of `specs` that no data place holds, fetched from its public copy and verified."""
    names = [known_set_name(spec) or "" for spec in specs]
    for spec, name in zip(specs, names, strict=True):
        if not name:
            raise UsageError(f"--download fetches a known set ({', '.join(KNOWN_SETS)}); {spec!r} is not one")
    target = download_dir(data_dir)  # may be new
    problem = unwritable_folder(target)
    if problem:
        raise UsageError(problem)
    target.mkdir(parents=True, exist_ok=True)
    places = data_places(data_dir)
    for name in dict.fromkeys(names):
        folder = locate_set(name, places)
        if folder is not None:
            err.print(f"{name}: already in {safe(folder)}, not downloaded")
            continue
        source = source_for(name)
        err.print(f"{name}: downloading {safe(source.url)} into {safe(target)}")
        with WorkProgress(err, f"downloading {name}", total=None, unit="MB") as progress:
            folder = download_set(
                set_manifest(name), target, source, on_bytes=lambda count: progress.update(advance=count / 1e6)
            )
        err.print(f"{name}: installed in {safe(folder)}, every file verified")


def settle_runners(
    methods: list[Method] | None, weights: list[Path] | None
) -> tuple[list[Method], list[MethodRunner], dict[str, list[dict[str, str]]]]:
    """The methods (none asked for: bicubic and the methods the given weights hold, or without weights the paper's
    columns: bicubic, SRCNN and VDSR from the shipped models), a runner per method (each given weights file serves the
    method whose architecture it holds; none given: the shipped models), and which files each learnt method runs,
    for the results."""
    if methods is not None:
        methods = list(dict.fromkeys(methods))
        networks = {m: family_architecture(m.value) for m in methods if m is not Method.bicubic}
        shared = [m.value for m in networks if list(networks.values()).count(networks[m]) > 1]
        if weights and shared:  # a file says which network it holds, not which of these methods it is
            raise UsageError(
                f"--weights: {' and '.join(shared)} are the same network; score given weights one at a time"
            )
    given = [(path, weights_runner(path)) for path in weights or []]
    if methods is None:
        held = [Method(runner.name) for _, runner in given]  # a runner is named by its architecture: vdsr or srcnn
        methods = list(dict.fromkeys([Method.bicubic, *held])) if given else list(DEFAULT_METHODS)
    networks = {m: family_architecture(m.value) for m in methods if m is not Method.bicubic}
    for path, runner in given:
        if runner.name not in networks.values():
            wanted = " or ".join(sorted(set(networks.values()))) or "a learnt method"
            raise UsageError(f"{path} holds {runner.name} weights, not {wanted}")
    runners: list[MethodRunner] = []
    sources: dict[str, list[dict[str, str]]] = {}
    for m in methods:
        if m is Method.bicubic:
            runners.append(method_runner(m))
            continue
        if not weights:  # the shipped models run as ONNX graphs
            require_modules(("onnxruntime",), needs=f"vdsr-bench -m {m.value}", extra="cpu")
        mine = (
            [(p, r) for p, r in given if r.name == networks[m]]
            if weights
            else [(p, weights_runner(p)) for p in shipped_weights(m)]
        )
        if not mine:
            raise UsageError(
                f"no --weights for {m.value}: give weights for every learnt method, or none for the shipped ones"
            )
        runners.append(per_scale(m, mine))
        sources[m.value] = [{"file": str(p), "sha256": sha256_file(p)} for p, _ in mine]
    return methods, runners, sources
