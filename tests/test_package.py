"""Promises about the package itself: what the base install pulls, what the README says, that the types check."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import requires

from conftest import REPO
from mypy import api as mypy_api

HEAVY = ("torch", "onnx", "tensorrt", "cuda")


def test_base_install_does_not_pull_torch() -> None:
    base = [r for r in requires("vdsr") or [] if "extra ==" not in r]
    assert base and not [r for r in base if r.lower().startswith(HEAVY)], base


def test_benchmark_imports_no_torch() -> None:
    code = (
        "import sys, vdsr.bench.cli; "
        "print([m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'tensorrt')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if line.startswith("pip install"))
    readme = (REPO / "README.md").read_text()
    assert command in readme
    setup_block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert setup_block is not None
    assert [line for line in setup_block.group(1).splitlines() if line.strip()][1] == command


def test_types_check_strictly() -> None:
    stdout, stderr, status = mypy_api.run(["--config-file", str(REPO / "pyproject.toml"), "-p", "vdsr"])
    assert status == 0, stdout + stderr
