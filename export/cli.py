"""`vdsr-export`: trained weights (.safetensors) to a self-contained ONNX graph, fp32 or fp16, dynamic N/H/W."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Annotated

import typer

from vdsr.bench.calibration import CALIBRATION_SET
from vdsr.bench.datasets import DATA_DIR_ENV, resolve_dataset
from vdsr.catalogue import DEFAULT_OPSET, MODELS, graph_name, shipped
from vdsr.errors import ModelError, UsageError
from vdsr.export.triton import IMAGE, check_name, engine_model, model_folder, onnx_model, write_image_model, write_model
from vdsr.files import sha256_file, unwritable_folder
from vdsr.model import Model
from vdsr.runtime.backends.specs import DEFAULT_TILE, GPU_BATCH, Profile, Shape, profile_for
from vdsr.runtime.backends.tensorrt import TensorRTUnavailable, build_engine, parse_shape, require_tensorrt
from vdsr.runtime.console import Command, error_console, exit_on_errors, make_app, require_modules, safe, version_option

app = make_app(__doc__)
RUNTIME_PROFILE = f"the runtime's windows: batch {GPU_BATCH} of {DEFAULT_TILE} + 2 x halo a side"


def given_shapes(texts: tuple[str | None, str | None, str | None]) -> tuple[Shape | None, ...]:
    """--min/--opt/--max as given (None: not given); UsageError for a shape that is not NxHxW."""
    try:
        return tuple(parse_shape(text) if text else None for text in texts)
    except UsageError as error:
        raise UsageError(f"--min/--opt/--max: {error}") from error


def engine_profile(halo: int, given: tuple[Shape | None, ...]) -> Profile:
    """The engine's profile: the windows vdsr-run sends with its default tile and batch (profile_for), each of
    --min/--opt/--max given replacing its shape. UsageError for shapes out of order."""
    runtime = profile_for(DEFAULT_TILE, GPU_BATCH, halo)
    shapes = [shape or default for shape, default in zip(given, (runtime.min, runtime.opt, runtime.max), strict=True)]
    try:
        return Profile(*shapes)
    except UsageError as error:
        raise UsageError(f"--min/--opt/--max: {error}") from error


def default_output(weights: Path | None, model: str, precision: str) -> Path:
    """Where the graph goes without --output: beside --weights (runs/vdsr.safetensors -> runs/vdsr.onnx,
    runs/vdsr_fp16.onnx with --fp16, runs/vdsr_int8.onnx with --int8); for a shipped model (no --weights) into the
    current folder (vdsr_fp16.onnx), never into the installed package beside its weights."""
    if weights is None:
        return Path(graph_name(model, precision))
    return weights.with_name(graph_name(weights.stem, precision))


def inside_installed_package(path: Path) -> bool:
    """Whether `path` is in the installed package's folder (site-packages), not in a source checkout's models/ (where
    the maintainers' `--weights models/...` export belongs)."""
    package = shipped("vdsr.safetensors").parent.resolve()
    installed = not (package.parent / "pyproject.toml").is_file()
    return installed and path.resolve().is_relative_to(package)


@app.command(cls=Command)
def main(
    weights: Annotated[
        Path | None, typer.Option("--weights", help="Trained weights.", show_default="the shipped VDSR")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help=f"A shipped model's weights ({', '.join(MODELS)}) instead of --weights.", show_default="no"
        ),
    ] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="fp16 weights, arithmetic and I/O.")] = False,
    int8: Annotated[
        bool,
        typer.Option("--int8", help="int8 graph for CPUs: recipe chosen on training images, cost checked on Set5/14."),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="--int8: write the graph even if its cost is over the bar.")
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="--int8: holds T91, BSD200, Set5, Set14.", show_default=f"${DATA_DIR_ENV}"),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="The graph's file.",
            show_default="beside --weights: <name>.onnx, <name>_fp16.onnx, <name>_int8.onnx; for a shipped "
            "model in the current folder, never the package's",
        ),
    ] = None,
    triton_repo: Annotated[
        Path | None,
        typer.Option("--triton-repo", help="Write the graph (and --engine) as Triton models here.", show_default="no"),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="--triton-repo: the model's name (its folder; the engine's is <name>_trt). Letters, digits, "
            "'_', '.', '-', not starting with '.' or '-', at most 100 characters.",
            show_default="the weights' name: vdsr, vdsr_fp16, vdsr_int8",
        ),
    ] = None,
    triton_image: Annotated[
        bool,
        typer.Option(
            "--triton-image",
            help="--triton-repo: also write <name>_image, files in and out through vdsr's pipeline (Triton's Python "
            "backend; the server's Python needs vdsr).",
        ),
    ] = False,
    opset: Annotated[int, typer.Option("--opset", min=17)] = DEFAULT_OPSET,
    engine: Annotated[
        Path | None,
        typer.Option(
            "--engine", help="Also build a TensorRT engine here (needs TensorRT and a GPU).", show_default="no engine"
        ),
    ] = None,
    profile_min: Annotated[
        str | None, typer.Option("--min", help="Engine profile min, NxHxW.", show_default=RUNTIME_PROFILE)
    ] = None,
    profile_opt: Annotated[
        str | None, typer.Option("--opt", help="Engine profile opt (tile shape), NxHxW.", show_default=RUNTIME_PROFILE)
    ] = None,
    profile_max: Annotated[
        str | None, typer.Option("--max", help="Engine profile max, NxHxW.", show_default=RUNTIME_PROFILE)
    ] = None,
    version: Annotated[bool, version_option()] = False,
) -> None:
    """Export VDSR or SRCNN weights to ONNX, checked with onnx.checker (full check). Everything that can be checked
    is checked before the export starts: the options, the data --int8 needs, the GPU and TensorRT --engine needs."""
    err = error_console()
    with exit_on_errors(err):
        require_modules(("torch", "onnx", "onnxscript"), needs="vdsr-export", extra="train")
        if int8:
            require_modules(("onnxruntime",), needs="vdsr-export --int8", extra="cpu")
        shapes = given_shapes((profile_min, profile_opt, profile_max))
        if triton_repo is not None and engine is not None and shapes[0] is not None and shapes[0][0] != 1:
            raise UsageError("--triton-repo --engine: Triton sends batches of 1 and up: --min's batch must be 1")
        if fp16 and int8:
            raise UsageError("choose one of --fp16 and --int8")
        if force and not int8:
            raise UsageError("--force is for --int8 (a graph over the int8 cost bar)")
        if int8 and engine is not None:  # TensorRT wants symmetric int8 Q/DQ; this graph's activations are uint8
            raise UsageError("the int8 graph is for ONNX Runtime on CPUs; build engines from fp32 or --fp16")
        if engine is not None:
            try:
                require_tensorrt()
            except TensorRTUnavailable as error:
                raise UsageError(f"--engine: {error}") from error
        if model is not None and weights is not None:
            raise UsageError("choose one of --model and --weights")
        if model is not None and model not in MODELS:
            raise UsageError(f"--model: expected one of {', '.join(MODELS)}, got {model!r}")
        if triton_repo is not None and output is not None:
            raise UsageError("choose one of --output and --triton-repo")
        if name is not None and triton_repo is None:
            raise UsageError("--name names a Triton model: it is for --triton-repo")
        if triton_image and triton_repo is None:
            raise UsageError("--triton-image writes a Triton model: it is for --triton-repo")
        source = weights or shipped(f"{model or 'vdsr'}.safetensors")
        if not source.is_file():
            raise UsageError(f"--{'weights' if weights else 'model'}: {source} is not a file")
        from onnx.defs import onnx_opset_version  # the newest opset the installed onnx knows

        if opset > onnx_opset_version():
            raise UsageError(f"--opset {opset}: the installed onnx knows opsets up to {onnx_opset_version()}")
        if engine is not None and _same_file(engine, source):
            raise UsageError(f"--engine: {engine} is the weights being exported")
        profile = engine_profile(Model.load(source).halo or 0, shapes)
        if int8:  # the calibration and validation images, verified, before any work
            from vdsr.export.quantize import SELECTION_SET, VALIDATION_SETS  # imports onnx

            for dataset in (CALIBRATION_SET, SELECTION_SET, *VALIDATION_SETS):
                resolve_dataset(dataset, data_dir)
        precision = "fp16" if fp16 else "int8" if int8 else "fp32"
        if triton_repo is None:
            target = output or default_output(weights, model or "vdsr", precision)
            if target.is_dir():
                raise UsageError(f"--output: {target} is a folder; give the graph's file name")
            if target.suffix.lower() != ".onnx":
                raise UsageError(f"--output: {target}: a graph's file name ends in .onnx")
            if _same_file(target, source):
                raise UsageError(f"--output: {target} is the weights being exported")
            if engine is not None and _same_file(target, engine):
                raise UsageError(f"--output: {target} is also --engine")
            if inside_installed_package(target):
                raise UsageError(
                    f"{target}: inside the installed vdsr package, which exports never change; give --output"
                )
            problem = unwritable_folder(target.parent)
            if problem:
                raise UsageError(f"--output: {problem}")
            _export(
                source,
                target,
                precision=precision,
                opset=opset,
                engine=engine,
                profile=profile,
                data_dir=data_dir,
                force=force,
                triton_repo=None,
                triton_image=False,
            )
            return
        served = name or Path(graph_name(source.stem, precision)).stem
        folders = (served, *([f"{served}_trt"] if engine else []), *([served + IMAGE] if triton_image else []))
        try:
            for folder in folders:
                check_name(folder)
        except UsageError as error:
            given = "--name" if name else f"--triton-repo (the name {source.name} gives; choose one with --name)"
            raise UsageError(f"{given}: {error}") from error
        try:
            problem = next(filter(None, (unwritable_folder(model_folder(triton_repo, f)) for f in folders)), None)
        except UsageError as error:
            raise UsageError(f"--triton-repo: {error}") from error
        if problem:
            raise UsageError(f"--triton-repo: {problem}")
        with tempfile.TemporaryDirectory() as staging:  # the graph is made here, then copied into the repository
            _export(
                source,
                Path(staging, f"{served}.onnx"),
                precision=precision,
                opset=opset,
                engine=engine,
                profile=profile,
                data_dir=data_dir,
                force=force,
                triton_repo=triton_repo,
                triton_image=triton_image,
            )


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (through links; a path not there yet is only the same by name)."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def _export(
    source: Path,
    target: Path,
    *,
    precision: str,
    opset: int,
    engine: Path | None,
    profile: Profile,
    data_dir: Path | None,
    force: bool,
    triton_repo: Path | None,
    triton_image: bool,
) -> None:
    """The export once the options are known to be usable: the graph to `target` (then, with a Triton repository,
    into it as a model), and the engine (into the repository too)."""
    err = error_console()
    with warnings.catch_warnings():  # torch's and its exporter's notes are not for our users
        warnings.simplefilter("ignore")
        import onnx

        from vdsr.export.onnx import export_onnx, save_onnx
        from vdsr.export.quantize import quantize_int8
        from vdsr.weights import load_weights

        model, scales = load_weights(source)
        try:
            proto = export_onnx(model, scales, sha256_file(source), fp16=precision == "fp16", opset=opset)
        except ModelError as error:  # weights that are not what this precision can hold
            raise ModelError(f"{source}: {error}") from None
        if precision == "int8":
            with tempfile.TemporaryDirectory() as tmp:
                save_onnx(proto, Path(tmp) / "fp32.onnx")
                quantize_int8(Path(tmp) / "fp32.onnx", target, data_dir, force=force, log=err.print)
            proto = onnx.load(str(target))
        else:
            save_onnx(proto, target)
    made = Model.load(target)
    size = target.stat().st_size / 1e6
    summary = f"{made.architecture} {precision}, scales {list(made.scales)}, halo {made.halo}"
    names = {"input_name": proto.graph.input[0].name, "output_name": proto.graph.output[0].name}
    if triton_repo is None:
        err.print(f"wrote {safe(target)}: {summary}, opset {proto.opset_import[0].version}, {size:.2f} MB")
    else:
        folder = write_model(triton_repo, onnx_model(target.stem, precision, **names), target)
        err.print(f"wrote Triton model {safe(folder)}: {summary}, {size:.2f} MB")
        if triton_image:
            folder = write_image_model(triton_repo, target.stem, graph=target, precision=precision)
            err.print(f"wrote Triton model {safe(folder)} (image files in and out, Python backend)")
    if engine is not None:  # the graph is written whatever happens to the engine (exit 1 if it fails)
        built = build_engine(target, profile, precision=precision, destination=engine)
        err.print(f"wrote {safe(built)} (TensorRT engine, profile {profile})")
        if triton_repo is not None:
            served = engine_model(target.stem, precision, max_batch=profile.max[0], **names)
            err.print(f"wrote Triton model {safe(write_model(triton_repo, served, built))} (TensorRT plan)")
