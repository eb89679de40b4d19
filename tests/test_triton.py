"""vdsr-export --triton-repo: models Triton Inference Server would load, checked against Triton's own ModelConfig
protobuf (tritonclient, in the test extra) and run in ONNX Runtime under the names the config gives. Triton's
onnxruntime and tensorrt backends are not installed here; the image model is served for real in
test_triton_server.py."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from vdsr.errors import EXIT_USAGE, ModelError
from vdsr.export import pbtxt, triton
from vdsr.export.cli import app
from vdsr.export.triton import (
    GPU_INSTANCES,
    GPU_QUEUE_DELAY_US,
    MAX_BATCH,
    config_fields,
    engine_model,
    model_config,
    onnx_model,
    write_model,
)
from vdsr.runtime.backends.onnx_runtime import OnnxRuntimeBackend
from vdsr.runtime.backends.specs import GPU_BATCH


def triton_config() -> Any:
    """tritonclient's model_config_pb2 (Triton's own ModelConfig protobuf), in the test extra."""
    return pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient: pip install '.[test]'")


def parse(text: str) -> Any:
    from google.protobuf import text_format

    return text_format.Parse(text, triton_config().ModelConfig())


@pytest.mark.parametrize(
    ("option", "name", "data_type", "kind"),
    [
        ([], "tiny", "TYPE_FP32", "KIND_CPU"),
        (["--fp16"], "tiny_fp16", "TYPE_FP16", "KIND_GPU"),
    ],
)
def test_a_triton_model_parses_as_triton_config_and_runs_under_its_names(
    option: list[str], name: str, data_type: str, kind: str, tiny_model: dict[str, Path], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    result = CliRunner().invoke(app, ["--weights", str(tiny_model["weights"]), "--triton-repo", str(repo), *option])
    assert result.exit_code == 0, result.output
    assert f"wrote Triton model {repo / name}" in result.output
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()) == [
        f"{name}/1/model.onnx",
        f"{name}/config.pbtxt",
    ]
    pb2 = triton_config()
    config = parse((repo / name / "config.pbtxt").read_text())
    dtype = pb2.DataType.Name
    assert config.name == name and config.backend == "onnxruntime" and config.max_batch_size == MAX_BATCH
    assert [(t.name, dtype(t.data_type), list(t.dims)) for t in config.input] == [("ilr", data_type, [1, -1, -1])]
    assert [(t.name, dtype(t.data_type), list(t.dims)) for t in config.output] == [("sr", data_type, [1, -1, -1])]
    assert [pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group] == [kind]
    assert config.HasField("dynamic_batching") and list(config.version_policy.specific.versions) == [1]
    gpu = kind == "KIND_GPU"  # GPUs: two instances, the runtime's batch of windows or MAX_BATCH, a short wait
    assert [g.count for g in config.instance_group] == [GPU_INSTANCES if gpu else 1]
    batching = config.dynamic_batching
    assert list(batching.preferred_batch_size) == ([GPU_BATCH, MAX_BATCH] if gpu else [1])
    assert batching.max_queue_delay_microseconds == (GPU_QUEUE_DELAY_US if gpu else 0)
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert [(a.name, dict(a.parameters)) for a in accelerators] == (
        [("tensorrt", {"precision_mode": "FP16", "max_workspace_size_bytes": str(1 << 30)})] if gpu else []
    )
    graph = onnx.load(str(repo / name / "1" / "model.onnx"))
    for declared, tensor in ((config.input[0], graph.graph.input[0]), (config.output[0], graph.graph.output[0])):
        dims = tensor.type.tensor_type.shape.dim  # Triton's batch first, then the config's dims
        assert tensor.name == declared.name and dims[0].dim_param and dims[1].dim_value == 1
        assert [bool(d.dim_param) for d in dims[2:]] == [True, True]  # H and W dynamic
        expected = onnx.TensorProto.FLOAT16 if data_type == "TYPE_FP16" else onnx.TensorProto.FLOAT
        assert tensor.type.tensor_type.elem_type == expected
    if data_type == "TYPE_FP32":  # the CPU model runs as Triton's ONNX Runtime backend would run it: by its names
        import onnxruntime as ort

        batch = np.random.default_rng(0).random((3, 1, 21, 34), dtype=np.float32)  # N <= max_batch_size, any H, W
        session = ort.InferenceSession(str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        (served,) = session.run([config.output[0].name], {config.input[0].name: batch})
        with OnnxRuntimeBackend(tiny_model["onnx"]) as reference:
            assert served.shape == batch.shape and np.abs(served - reference(batch)).max() == 0


def test_the_engine_model_is_bounded_by_its_profile() -> None:
    pb2 = triton_config()
    plan = engine_model("vdsr_fp16", "fp16", max_batch=8, input_name="ilr", output_name="sr")
    config = parse(model_config(plan))
    assert (config.name, config.backend, config.max_batch_size, plan.file) == (
        "vdsr_fp16_trt",
        "tensorrt",
        8,
        "model.plan",
    )
    assert pb2.DataType.Name(config.input[0].data_type) == "TYPE_FP16"  # the fp16 graph's own I/O
    assert (
        pb2.DataType.Name(
            parse(model_config(onnx_model("v", "int8", input_name="i", output_name="o"))).input[0].data_type
        )
        == "TYPE_FP32"
    )  # int8 graphs take and give fp32


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_triton_engine_needs_tensorrt_and_a_batch_1_profile(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    weights = ["--weights", str(tiny_model["weights"]), "--triton-repo", str(tmp_path / "repo")]
    no_trt = CliRunner().invoke(app, [*weights, "--engine", str(tmp_path / "x.plan")])
    assert no_trt.exit_code == EXIT_USAGE and "--engine" in no_trt.output
    batch_2 = CliRunner().invoke(app, [*weights, "--engine", str(tmp_path / "x.plan"), "--min", "2x32x32"])
    assert batch_2.exit_code == EXIT_USAGE and "--min's batch must be 1" in batch_2.output
    assert list(tmp_path.iterdir()) == []


def test_triton_repository_usage_errors_write_nothing(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    weights = ["--weights", str(tiny_model["weights"])]
    repo = tmp_path / "repo"
    cases = [
        ([*weights, "--triton-repo", str(repo), "--output", str(tmp_path / "x.onnx")], "choose one of --output"),
        ([*weights, "--model", "vdsr", "--triton-repo", str(repo)], "choose one of --model and --weights"),
        (["--model", "edsr", "--triton-repo", str(repo)], "--model: expected one of"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == EXIT_USAGE and message in result.output, (args, result.output)
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(app, [*weights, "--triton-repo", str(tmp_path / "file" / "repo")])
    assert result.exit_code == EXIT_USAGE and "--triton-repo: cannot write in" in result.output
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "tiny").write_text("")  # a file where the model's folder goes
    result = CliRunner().invoke(app, [*weights, "--triton-repo", str(repo)])
    assert result.exit_code == EXIT_USAGE and "--triton-repo: cannot write in" in result.output
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["file", "repo", "repo/tiny"]


def test_a_model_name_is_checked_and_everything_is_written_inside_the_repository(
    tiny_model: dict[str, Path], tmp_path: Path
) -> None:
    """The name came from the weights file: '...safetensors' wrote into the repository's parent, a quote added fields
    to the config, a newline broke it (exit 0)."""
    folder = tmp_path / "w"
    folder.mkdir()
    dots = folder / "...safetensors"
    shutil.copy(tiny_model["weights"], dots)
    result = CliRunner().invoke(app, ["--weights", str(dots), "--triton-repo", str(folder / "repo")])
    assert result.exit_code == EXIT_USAGE and "'..' cannot name a Triton model: use letters" in result.stderr
    assert "--name" in result.stderr and len(result.stderr.splitlines()) == 1
    assert [p.name for p in folder.iterdir()] == ["...safetensors"]
    weights = ["--weights", str(tiny_model["weights"]), "--triton-repo", str(tmp_path / "repo")]
    for bad in ['a" backend: "tensorrt', "a\nb", ".hidden", "..", "-x", "a/b", "x" * 101]:
        result = CliRunner().invoke(app, [*weights, "--name", bad])
        assert result.exit_code == EXIT_USAGE and result.stderr.startswith("error: --name: "), (bad, result.stderr)
        assert "cannot name a Triton model" in result.stderr and len(result.stderr.splitlines()) == 1
    no_repo = CliRunner().invoke(app, ["--weights", str(tiny_model["weights"]), "--name", "x"])
    assert no_repo.exit_code == EXIT_USAGE and "it is for --triton-repo" in no_repo.stderr
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "linked").symlink_to(outside)  # a link on the way out of the repository
    result = CliRunner().invoke(app, [*weights, "--name", "linked"])
    assert result.exit_code == EXIT_USAGE and "outside the Triton repository" in result.stderr
    assert list(outside.iterdir()) == [] and not (tmp_path / "w" / "repo").exists()
    result = CliRunner().invoke(app, [*weights, "--name", "sr.v2-x"])
    assert result.exit_code == 0, result.output
    assert parse((tmp_path / "repo" / "sr.v2-x" / "config.pbtxt").read_text()).name == "sr.v2-x"
    assert (tmp_path / "repo" / "sr.v2-x" / "1" / "model.onnx").is_file()


@pytest.mark.parametrize("input_name", ['ilr" max_batch_size: 0 x: "y', "il\nr", "il\\r"])
def test_a_config_that_does_not_parse_back_as_meant_is_not_written(
    input_name: str, tiny_model: dict[str, Path], tmp_path: Path
) -> None:
    model = onnx_model("tiny", "fp32", input_name=input_name, output_name="sr")
    with pytest.raises(ModelError, match=r"config.pbtxt: (does not parse back|parses back to other fields)"):
        write_model(tmp_path / "repo", model, tiny_model["onnx"])
    assert not (tmp_path / "repo").exists()


def test_the_config_text_parses_back_strictly() -> None:
    model = engine_model("vdsr", "fp32", max_batch=4, input_name="ilr", output_name="sr")
    assert pbtxt.parse(model_config(model)) == config_fields(model)
    assert pbtxt.parse('a: "x" b { c: [ 1, -2 ] d [ { e: E }, { } ] }') == {
        "a": "x",
        "b": {"c": [1, -2], "d": [{"e": pbtxt.Constant("E")}, {}]},
    }
    for text in ['a: "x" a: "y"', 'a: "x', "a: 1.5", "a { b: 1", "a: [ 1, ]", "a: 1 }", "a: 'x'", 'a: "x\\"y"']:
        with pytest.raises(ValueError):
            pbtxt.parse(text)


@pytest.mark.parametrize(
    ("option", "name", "kind", "backend"),
    [([], "tiny", "KIND_CPU", "onnxruntime-cpu"), (["--fp16"], "tiny_fp16", "KIND_GPU", "onnxruntime-cuda")],
)
def test_the_image_model_takes_files_and_holds_the_graph_and_the_packages_model_py(
    option: list[str], name: str, kind: str, backend: str, tiny_model: dict[str, Path], tmp_path: Path
) -> None:
    """--triton-image: <name>_image beside the ONNX model, whose model.py is vdsr.export.triton_image's source (served
    for real in test_triton_server.py)."""
    repo = tmp_path / "repo"
    weights = ["--weights", str(tiny_model["weights"]), "--triton-repo", str(repo), *option]
    result = CliRunner().invoke(app, [*weights, "--triton-image"])
    assert result.exit_code == 0, result.output
    assert f"wrote Triton model {repo / name}_image" in result.output
    folder = repo / f"{name}_image"
    assert sorted(p.relative_to(repo).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        f"{name}_image/1/model.onnx",
        f"{name}_image/1/model.py",
        f"{name}_image/config.pbtxt",
    ]
    assert (folder / "1" / "model.onnx").read_bytes() == (repo / name / "1" / "model.onnx").read_bytes()
    assert (folder / "1" / "model.py").read_bytes() == Path(triton.__file__).with_name("triton_image.py").read_bytes()
    pb2 = triton_config()
    config = parse((folder / "config.pbtxt").read_text())
    dtype = pb2.DataType.Name
    assert (config.name, config.backend, config.max_batch_size) == (f"{name}_image", "python", 0)
    assert [(t.name, dtype(t.data_type), list(t.dims), t.optional) for t in config.input] == [
        ("image", "TYPE_STRING", [1], False),
        ("scale", "TYPE_FP32", [1], False),
        ("format", "TYPE_STRING", [1], True),
    ]
    assert [(t.name, dtype(t.data_type), list(t.dims)) for t in config.output] == [("image", "TYPE_STRING", [1])]
    assert [pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group] == [kind]
    settings = {key: value.string_value for key, value in config.parameters.items()}
    assert settings["backend"] == backend and int(settings["max_pixels"]) > 0 and settings["cpu_threads"] == "0"


def test_the_image_model_is_for_a_repository_and_its_name_is_checked(
    tiny_model: dict[str, Path], tmp_path: Path
) -> None:
    weights = ["--weights", str(tiny_model["weights"])]
    no_repo = CliRunner().invoke(app, [*weights, "--triton-image"])
    assert no_repo.exit_code == EXIT_USAGE and "it is for --triton-repo" in no_repo.stderr
    repo = ["--triton-repo", str(tmp_path / "repo"), "--triton-image"]
    long = CliRunner().invoke(app, [*weights, *repo, "--name", "x" * 95])  # x..._image: 101 characters
    assert long.exit_code == EXIT_USAGE and "cannot name a Triton model" in long.stderr
    assert not (tmp_path / "repo").exists()
