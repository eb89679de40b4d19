"""vdsr-run --ray ray://host:port against a real head node started here on 127.0.0.1 (`ray start --head` in a
private folder, token authentication on, as Ray 2.59+ starts clusters when a token is there), and the cluster
failures that must exit 4 with one line: an address nobody answers, a cluster lost mid-run. Each command runs as a
process of its own, so what a user sees (no traceback, the exit code) is what is checked. The head is stopped by its
own PID (SIGTERM, then SIGKILL), never by `ray stop`, which would stop every Ray on the machine."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vdsr.errors import EXIT_BACKEND, EXIT_FAILED

pytest.importorskip("ray", reason="Ray is the optional `ray` extra: pip install '.[ray]'")
from test_ray import failures, mixed_folder, outputs  # noqa: E402

START_SECONDS = 120  # a head node on a busy 2-core machine starts in about 10 s
RUN_SECONDS = 300


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def private_env(folder: Path, **extra: str) -> dict[str, str]:
    """This machine's environment without any Ray settings of its own (a RAY_ADDRESS, a token mode set by an earlier
    ray.init in this process), the token in the private folder, Ray's default folder private too."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return env | {"RAY_TMPDIR": str(folder), "RAY_AUTH_TOKEN_PATH": str(folder / "token")} | extra


@contextmanager
def head_node() -> Iterator[tuple[str, dict[str, str], subprocess.Popen[bytes]]]:
    """A head node of 2 CPUs on 127.0.0.1 with its Ray client server; yields its ray:// address and the environment
    a client of it runs in (its token's file). Stopped by its PID: SIGTERM, then SIGKILL after a bounded wait."""
    folder = Path(tempfile.mkdtemp(prefix="rayh-"))  # short: Ray's socket names must fit
    (folder / "token").write_text(secrets.token_hex(32))
    env = private_env(folder)
    port, client = free_port(), free_port()
    command = ["ray", "start", "--head", "--block", "--port", str(port), "--ray-client-server-port", str(client)]
    command += ["--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--include-dashboard", "false"]
    command += ["--temp-dir", str(folder / "t"), "--disable-usage-stats"]
    log = (folder / "head.log").open("wb")
    head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_SECONDS
        while not _listening(client):
            assert head.poll() is None, (folder / "head.log").read_text()
            assert time.monotonic() < deadline, "the head node did not start"
            time.sleep(0.5)
        yield f"ray://127.0.0.1:{client}", env, head
    finally:
        stop(head)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def stop(head: subprocess.Popen[bytes]) -> None:
    """`ray start --block` stops its own processes on SIGTERM; SIGKILL to its process group if it does not."""
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)


def vdsr_run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [shutil.which("vdsr-run") or "vdsr-run", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=RUN_SECONDS, check=False)


def test_a_ray_client_run_writes_what_a_plain_run_writes(tmp_path: Path) -> None:
    """The default authentication of the installed Ray (a token) works with the token in the client's environment:
    the same files, pixels and failures as a plain run, the failures one line each."""
    mixed_folder(tmp_path / "in")
    with head_node() as (address, env, _):
        plain = vdsr_run([str(tmp_path / "in"), "-s", "2", "-o", str(tmp_path / "plain")], env)
        on_ray = vdsr_run([str(tmp_path / "in"), "-s", "2", "-o", str(tmp_path / "ray"), "--ray", address], env)
    assert plain.returncode == on_ray.returncode == EXIT_FAILED, on_ray.stderr
    assert "Traceback" not in on_ray.stderr and "5 written, 0 skipped (existing), 2 failed" in on_ray.stderr
    assert failures(on_ray.stderr) == failures(plain.stderr) and len(failures(plain.stderr)) == 2
    expected, got = outputs(tmp_path / "plain"), outputs(tmp_path / "ray")
    assert sorted(got) == sorted(expected) and all(np.array_equal(got[n], expected[n]) for n in expected)


def test_a_cluster_nobody_answers_is_one_line_and_exit_4(tmp_path: Path) -> None:
    mixed_folder(tmp_path / "in")
    (tmp_path / "token").write_text(secrets.token_hex(32))
    env = private_env(tmp_path, RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S="1", RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S="1")
    address = f"ray://127.0.0.1:{free_port()}"  # nothing listens there
    result = vdsr_run([str(tmp_path / "in"), "-s", "2", "--ray", address], env)
    assert result.returncode == EXIT_BACKEND, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and address in errors[0] and "cannot reach the cluster" in errors[0], result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "in_x2").exists()


def test_a_cluster_lost_mid_run_stops_it_with_exit_4(tmp_path: Path) -> None:
    """The head node killed while the run goes on: the summary of what was written, one line why, exit 4. (Stopped by
    SIGTERM instead, the head took long enough to end that on an idle 2-core machine the run finished all 200.)"""
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(7)
    for i in range(200):
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(tmp_path / "in" / f"{i:03}.png")
    with head_node() as (address, env, head):
        # the client gives up on a lost cluster after this grace; long enough that a busy 2-core machine's pauses
        # (actors starting two backends each) are not taken for a loss
        env = env | {"RAY_CLIENT_RECONNECT_GRACE_PERIOD": "15"}
        command = [shutil.which("vdsr-run") or "vdsr-run", str(tmp_path / "in"), "-s", "2", "--ray", address]
        command += ["-o", str(tmp_path / "out")]
        run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + RUN_SECONDS
            # a quarter written: the results of the first batches have reached the driver, to be counted
            while not (tmp_path / "out").exists() or len(list((tmp_path / "out").glob("*.png"))) < 50:
                if run.poll() is not None or time.monotonic() > deadline:
                    run.kill()  # a run that hung: its output is what it said so far
                    pytest.fail(f"the run ended before any result: {run.communicate(timeout=30)[1][-3000:]}")
                time.sleep(0.2)
        finally:  # lost at once, as a machine is: a graceful stop could let the last images finish first
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
    try:  # the head is gone now
        _, stderr = run.communicate(timeout=RUN_SECONDS)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == EXIT_BACKEND, stderr
    assert "Traceback" not in stderr and "the run stopped, the files written before are complete" in stderr
    (summary,) = [line for line in stderr.splitlines() if " written, " in line]
    assert 0 < int(summary.split()[0]) < 200 and "stopped: " in stderr


@pytest.mark.parametrize("aborts", [1, 2])
def test_a_client_session_the_head_failed_to_start_gets_one_more_try(
    monkeypatch: pytest.MonkeyPatch, aborts: int
) -> None:
    """A cluster that answered but whose client server failed to start this driver's session (as a busy head does
    now and then) is tried once more after a pause; twice failed, it is one line and exit 4 (BackendError)."""
    import ray

    from vdsr.errors import BackendError
    from vdsr.runtime import ray_data

    calls: list[str] = []

    def init(**kwargs: object) -> None:
        calls.append("init")
        if calls.count("init") <= aborts:
            raise ConnectionAbortedError("Initialization failure from server:\nbusy")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    monkeypatch.setattr(ray_data, "RETRY_PAUSE_S", 0.0)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # no token mode switched on in this process
    if aborts == 1:
        assert ray_data.connect("ray://127.0.0.1:1") is True
    else:
        with pytest.raises(BackendError, match="cannot reach the cluster"):
            ray_data.connect("ray://127.0.0.1:1")
    assert calls == ["init", "shutdown", "init"]
