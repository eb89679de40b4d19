"""The Triton repository served for real: `vdsr-export --triton-repo DIR --triton-image` loaded into the tritonserver
that the nvidia-pytriton wheel bundles (Triton 2.51, CPU here), on loopback, and asked over gRPC.

That build has the Python backend only: the image model (<name>_image) loads and serves; the ONNX models cannot
load there (no onnxruntime backend: the test checks that this, and nothing in their configs, is what refuses them).
The TensorRT accelerator in the fp16 model's config needs a GPU Triton with the onnxruntime backend: not run here.

How the server is started: the Python backend's files are linked into a private backend folder with the stub for
this Python version; the stub embeds this interpreter's shared libpython (LD_LIBRARY_PATH) and takes its sys.path
from the `python3` first on PATH, so a virtual environment with this one's site-packages (vdsr, onnxruntime, Pillow)
goes first on PATH. That stub was built against NumPy 1's C API (pytriton pins numpy<2): under NumPy 2 it misreads
every tensor, so the environment gets numpy<2 from the folder named by VDSR_TRITON_NUMPY1 (made with
`pip install --target DIR "numpy<2"`) when this Python's numpy is 2.
"""

from __future__ import annotations

import importlib.util
import io
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vdsr.export.cli import app as export_app
from vdsr.runtime.cli import app as run_app

NUMPY1 = "VDSR_TRITON_NUMPY1"
NUMPY1_FOLDER = "vdsr-triton-numpy1"  # in the temporary folder: where the README's test command puts numpy<2
VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
READY_SECONDS = 120  # the stub starts, imports vdsr and opens the graph
REQUEST_SECONDS = 60
STOP_SECONDS = 15


def triton_files() -> tuple[Path, Path, Path]:
    """(tritonserver, its Python backend folder, the stub for this Python), or skip saying what is missing; the
    package is found without importing it (its numpy<2 requirement may not hold here)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("nvidia-pytriton is not installed (pip install --no-deps nvidia-pytriton==0.7.0)")
    root = Path(spec.submodule_search_locations[0]) / "tritonserver"
    server, backend = root / "bin" / "tritonserver", root / "backends" / "python"
    stub = root / "python_backend_stubs" / VERSION / "triton_python_backend_stub"
    for path in (server, backend / "libtriton_python.so", stub):
        if not path.is_file():
            pytest.skip(f"nvidia-pytriton has no {path.relative_to(root)} (for Python {VERSION})")
    return server, backend, stub


def stub_environment(folder: Path) -> Path:
    """A virtual environment over this Python's packages (numpy<2 first where this numpy is 2); its bin folder."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        pytest.skip(f"this Python ({sys.executable}) has no shared libpython{VERSION}.so for the stub to embed")
    numpy1 = None
    if int(np.__version__.split(".")[0]) >= 2:
        numpy1 = os.environ.get(NUMPY1) or str(Path(tempfile.gettempdir()) / NUMPY1_FOLDER)  # the test command's
        if not (Path(numpy1) / "numpy").is_dir():
            pytest.skip(
                f"the stub needs numpy<2: run the README's test command (it makes {numpy1}), or set {NUMPY1} to a "
                "folder made by pip install --no-deps --target DIR 'numpy<2'"
            )
    venv.EnvBuilder(system_site_packages=True, symlinks=True).create(folder)
    if numpy1:  # a .pth entry of the environment's site-packages comes before this Python's own site-packages
        (folder / "lib" / f"python{VERSION}" / "site-packages" / "numpy1.pth").write_text(f"{numpy1}\n")
    return folder / "bin"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after STOP_SECONDS: the server started here, by its PID."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_SECONDS)


@pytest.fixture(scope="module")
def served(tiny_model: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The tiny VDSR exported as a repository (fp32 with its image model, and fp16), tritonserver serving its image
    model; the gRPC client, the repository and the server's log."""
    grpc = pytest.importorskip("tritonclient.grpc", reason="tritonclient: pip install '.[test]'")
    server, backend, stub = triton_files()
    tmp = tmp_path_factory.mktemp("triton")
    path = stub_environment(tmp / "stub_env")
    repo = tmp / "repo"
    weights = ["--weights", str(tiny_model["weights"]), "--triton-repo", str(repo)]
    for option in (["--triton-image"], ["--fp16"]):
        result = CliRunner().invoke(export_app, [*weights, *option])
        assert result.exit_code == 0, result.output
    backends = tmp / "backends"
    (backends / "python").mkdir(parents=True)
    for source in (backend / "libtriton_python.so", backend / "triton_python_backend_utils.py", stub):
        (backends / "python" / source.name).symlink_to(source)  # the stub's RPATH follows the link to the wheel
    http, grpc_port, log = free_port(), free_port(), tmp / "tritonserver.log"
    command = [
        str(server),
        f"--model-repository={repo}",
        f"--backend-directory={backends}",
        "--model-control-mode=explicit",
        "--load-model=tiny_image",
        "--http-address=127.0.0.1",
        f"--http-port={http}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc_port}",
        "--allow-metrics=false",
        f"--exit-timeout-secs={STOP_SECONDS}",
    ]
    libdir = str(sysconfig.get_config_var("LIBDIR"))
    env = os.environ | {
        "PATH": f"{path}{os.pathsep}{os.environ.get('PATH', '')}",
        "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [libdir, os.environ.get("LD_LIBRARY_PATH")])),
    }
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    try:
        deadline = time.monotonic() + READY_SECONDS
        while not ready(http, "tiny_image"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tritonserver did not serve tiny_image:\n{log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.5)
        client = grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        yield {"client": client, "grpc": grpc, "repo": repo, "log": log}
        client.close()
    finally:
        stop(process)


def ready(port: int, model: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/{model}/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:  # refused while it starts, 400 until the model is loaded
        return False


def upscale(served: dict[str, Any], data: bytes, scale: float, fmt: str | None = None) -> bytes:
    grpc = served["grpc"]
    inputs = [("image", "BYTES", np.array([data], dtype=np.object_)), ("scale", "FP32", np.array([scale], np.float32))]
    if fmt is not None:
        inputs.append(("format", "BYTES", np.array([fmt.encode()], dtype=np.object_)))
    tensors = []
    for name, kind, values in inputs:
        tensor = grpc.InferInput(name, list(values.shape), kind)
        tensor.set_data_from_numpy(values)
        tensors.append(tensor)
    result = served["client"].infer("tiny_image", tensors, client_timeout=REQUEST_SECONDS)
    (found,) = result.as_numpy("image")
    return bytes(found)


def vdsr_run(served: dict[str, Any], source: Path, scale: float, fmt: str | None = None) -> Path:
    """vdsr-run's result for `source` with the repository's own graph."""
    graph = served["repo"] / "tiny_image" / "1" / "model.onnx"
    output = source.with_name(f"{source.stem}_run{source.suffix if fmt is None else '.' + fmt}")
    options = ["--model", str(graph), "--backend", "onnxruntime-cpu", "-s", str(scale), "-o", str(output)]
    result = CliRunner().invoke(run_app, [str(source), *options, *(["--format", fmt] if fmt else [])])
    assert result.exit_code == 0, result.output
    return output


def pixels(data: bytes) -> tuple[str | None, np.ndarray]:
    with Image.open(io.BytesIO(data)) as image:
        return image.format, np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize(("suffix", "fmt"), [(".png", None), (".jpg", None), (".jpg", "png")])
def test_the_image_model_gives_vdsr_runs_result(
    suffix: str, fmt: str | None, served: dict[str, Any], tmp_path: Path
) -> None:
    rows, cols = np.mgrid[0:37, 0:45]
    rgb = np.stack([rows * 6, cols * 5, (rows * cols) % 251], axis=-1).astype(np.uint8)
    source = tmp_path / f"in{suffix}"
    Image.fromarray(rgb).save(source, quality=90) if suffix == ".jpg" else Image.fromarray(rgb).save(source)
    got_format, got = pixels(upscale(served, source.read_bytes(), 2.0, fmt))
    want_format, want = pixels(vdsr_run(served, source, 2.0, fmt).read_bytes())
    assert got_format == want_format == ("PNG" if suffix == ".png" or fmt else "JPEG")
    assert got.shape == want.shape == (74, 90, 3)
    assert np.abs(got - want).max() <= 1


def test_a_bad_request_gets_its_own_error_and_the_server_goes_on(served: dict[str, Any]) -> None:
    errors = served["grpc"].InferenceServerException
    buffer = io.BytesIO()
    Image.new("L", (20, 16), 128).save(buffer, "PNG")
    cases = [
        (b"not an image at all", 2.0, None, "image: "),
        (buffer.getvalue(), 0.5, None, "scale"),
        (buffer.getvalue(), 2.0, "eps", "cannot write '.eps' images"),
    ]
    for data, scale, fmt, message in cases:
        with pytest.raises(errors) as raised:
            upscale(served, data, scale, fmt)
        assert message in str(raised.value) and "Stub process" not in str(raised.value), str(raised.value)
    assert pixels(upscale(served, buffer.getvalue(), 2.0))[1].shape == (32, 40, 3)  # still serving


def test_the_onnx_models_need_the_onnxruntime_backend_which_this_build_lacks(served: dict[str, Any]) -> None:
    """Their configs parse in Triton itself (the fp16 one with its TensorRT accelerator): what refuses them is the
    missing backend, which NGC's containers have."""
    for name in ("tiny", "tiny_fp16"):
        with pytest.raises(served["grpc"].InferenceServerException) as raised:
            served["client"].load_model(name, client_timeout=REQUEST_SECONDS)
        assert "unable to find backend library for backend 'onnxruntime'" in str(raised.value), str(raised.value)
    assert served["client"].is_model_ready("tiny_image")
