"""vdsr-serve, the HTTP service on Ray Serve: the real command started as a subprocess on loopback (two of them: one
with the default limits, one with tight ones), asked over HTTP, and stopped by SIGTERM. Every request has a timeout,
readiness is polled for a bounded time, and no assertion is about speed."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("ray.serve", reason='vdsr-serve needs Ray Serve: pip install "vdsr[serve]"')
if not Path("/proc/self/stat").exists():
    pytest.skip("the server's processes are counted from /proc (Linux)", allow_module_level=True)

from vdsr.bench.drawn import sample_photo  # noqa: E402
from vdsr.bench.resident import descendants  # noqa: E402
from vdsr.errors import UsageError  # noqa: E402
from vdsr.runtime.encoded import result_format  # noqa: E402
from vdsr.runtime.serve.limits import (  # noqa: E402
    MAX_LINE,
    Limits,
    Pace,
    Work,
    body_length,
    busy,
    expected_wait,
    parse_ask,
    planned_pixels,
)
from vdsr.runtime.serve.limits import text as one_line  # noqa: E402

SERVE = [sys.executable, "-c", "from vdsr.runtime.serve.cli import app; app()"]  # vdsr-serve, whatever PATH holds
READY_S = 180.0
REQUEST_S = 300.0  # a busy 2-core machine (training beside) takes minutes for 3 concurrent requests
TIGHT = ["--max-queue", "1", "--timeout", "0.5", "--max-body", "0.25"]  # 0.25 MiB


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_S)
        try:
            connection.request(method, path, body=body)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def upscale(self, body: bytes, query: str = "scale=2") -> tuple[int, dict[str, str], bytes]:
        return self.request("POST", f"/upscale?{query}", body)


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(folder: Path, name: str, *options: str) -> Server:
    port = free_port()
    log = folder / f"{name}.log"
    env = {**os.environ, "RAY_TMPDIR": str(folder)}
    with log.open("wb") as out:
        command = [*SERVE, "--host", "127.0.0.1", "--port", str(port), *options]
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    return Server(process, port, log)


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"vdsr-serve exited {server.process.returncode}: {server.log.read_text()[-3000:]}")
        try:
            if server.request("GET", "/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(1.0)
    pytest.fail(f"vdsr-serve not ready in {READY_S:.0f} s: {server.log.read_text()[-3000:]}")


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(60)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(10)


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="vs-", dir="/tmp" if os.path.isdir("/tmp") else None) as root:
        yield Path(root)  # short: Ray's socket paths are limited to 107 bytes


@pytest.fixture(scope="module")
def servers(folder: Path) -> Iterator[tuple[Server, Server]]:
    """Both started at once (Ray starts slowly on 2 cores): a long batch wait makes batching across requests sure; a
    long timeout, so that on a slow or busy machine the pace rule (admission by the measured seconds per request)
    refuses none of the normal server's requests (the tight one tests refusals)."""
    normal = start(folder, "normal", "--batch-wait-ms", "200", "--timeout", "600")
    tight = start(folder, "tight", *TIGHT)
    try:
        wait_ready(normal)
        wait_ready(tight)
        yield normal, tight
    finally:
        stop(normal)
        stop(tight)


@pytest.fixture(scope="module")
def server(servers: tuple[Server, Server]) -> Server:
    return servers[0]


@pytest.fixture(scope="module")
def tight(servers: tuple[Server, Server]) -> Server:
    return servers[1]


def encoded(pixels: np.ndarray, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt, **options)
    return out.getvalue()


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)), dtype=np.int32)


PHOTO = sample_photo(300, 200, seed=1)
SQUARE = sample_photo(300, 300, seed=2)  # windows of 296x296 at tile 256: concurrent requests share their shape


def forged_png(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` and which holds no pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def forged_jpeg(width: int, height: int) -> bytes:
    """A real small JPEG with its frame header (SOF0) rewritten to claim `width` x `height`."""
    data = bytearray(encoded(PHOTO, "JPEG", quality=80))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_a_request_that_would_time_out_is_refused_when_it_comes() -> None:
    """Admission by work: a request is admitted only if its window pixels, read from its header, with what the
    admitted requests have left, would be run within 80% of its timeout at the backend's measured pace. Admission by
    the average request admitted 20 concurrent 300x300 images at a 20 s timeout together, and all ended in 504."""
    paces = {"vdsr": Pace(1.0, 1e6), "srcnn": Pace(0.1, 1e6)}  # 1 s and 0.1 s per megapixel of windows
    big, half_done = Work("vdsr", 30_000_000), Work("srcnn", 10_000_000, done=5_000_000)
    assert expected_wait([big, half_done], paces) == pytest.approx(30.0 + 0.5)
    big.done = 31_000_000  # more than planned: nothing left, never a negative wait
    assert expected_wait([big], paces) == 0.0
    pace = Pace(2.0, 1e6)
    pace.measured(3.0, 1_000_000)  # one backend call: 3 s for 1 MP of windows
    assert pace.seconds_per_pixel == pytest.approx(0.7 * 2e-6 + 0.3 * 3e-6)
    pace.measured(1.0, 0)  # no windows: nothing learnt
    assert pace.seconds_per_pixel == pytest.approx(0.7 * 2e-6 + 0.3 * 3e-6)
    pace.measured(0.01, 256)  # a tiny window's fixed cost (39 us a pixel) counts by its size
    assert pace.seconds_per_pixel < 2.32e-6
    square, limits = encoded(SQUARE, "PNG"), Limits()
    assert planned_pixels(square, 2, tile=256, halo=20, limits=limits) == 9 * 296 * 296  # 600x600: 3x3 tiles
    assert planned_pixels(encoded(SQUARE, "JPEG"), 1.5, tile=256, halo=20, limits=limits) == 4 * 296 * 296
    assert planned_pixels(encoded(SQUARE[:8, :8], "PNG"), 2, tile=256, halo=20, limits=limits) == 16 * 16
    for refused in (b"not an image", forged_png(100_000, 100_000), square[:40]):  # refused before any work
        assert planned_pixels(refused, 2, tile=256, halo=20, limits=limits) == 0
    assert planned_pixels(square, 8, tile=256, halo=20, limits=Limits(max_output_pixels=1_000_000)) == 0
    reply = busy(9, retry_after=2.2)
    assert reply.status == 503 and dict(reply.headers) == {"Retry-After": "3"}


def test_request_rules_without_a_server() -> None:
    assert parse_ask([("scale", "2.5")], ["vdsr", "srcnn"]).model == "vdsr"
    assert parse_ask([("scale", "2"), ("model", "srcnn"), ("format", "JPG")], ["vdsr", "srcnn"]).fmt == "JPEG"
    for query, cause in (
        ([], "needs scale"),
        ([("scale", "x")], "got 'x'"),
        ([("scale", "9")], "got '9'"),
        ([("scale", "\uff12")], "got '\uff12'"),  # a full-width 2: float() takes it, the rule does not
        ([("scale", "2"), ("model", "other")], "not served"),
        ([("scale", "2"), ("fromat", "png")], "unknown query parameter 'fromat'"),
        ([("scale", "abc"), ("scale", "2")], "'scale' given twice"),
        ([("scale", "2"), ("model", "vdsr"), ("model", "vdsr")], "'model' given twice"),
        *(([("scale", "2"), ("format", f)], f"format {f!r} is not one") for f in ("", "x.png", "a/b.png", "apng")),
    ):
        with pytest.raises(UsageError, match=re.escape(cause)):
            parse_ask(query, ["vdsr"])
    long = one_line(400, f"model {'m' * 60_000!r} is not served here")
    assert len(long.body) <= MAX_LINE + 1 and long.body.endswith(b"...\n")
    gif, jpeg = encoded(PHOTO, "GIF"), encoded(PHOTO, "JPEG")
    assert (result_format(gif, None), result_format(jpeg, None), result_format(jpeg, "PNG")) == ("PNG", "JPEG", "PNG")
    assert body_length("10", 100) is None and body_length(None, 100) is None
    assert [body_length(v, 100).status for v in ("101", "ten")] == [413, 400]  # type: ignore[union-attr]


def test_results_equal_vdsr_run_for_png_and_jpeg(server: Server, folder: Path) -> None:
    inputs = folder / "inputs"
    inputs.mkdir()
    files = {"photo.png": encoded(PHOTO, "PNG"), "photo.jpg": encoded(PHOTO, "JPEG", quality=90)}
    for name, data in files.items():
        (inputs / name).write_bytes(data)
    ran = subprocess.run(
        [
            sys.executable,
            "-c",
            "from vdsr.runtime.cli import app; app()",
            str(inputs),
            "-s",
            "2",
            "--tile",
            "256",
            "--model",
            "vdsr",
        ],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr.decode()
    for name, content_type in (("photo.png", "image/png"), ("photo.jpg", "image/jpeg")):
        status, headers, body = server.upscale(files[name])
        assert status == 200, body
        assert headers["content-type"] == content_type
        expected = decoded((folder / "inputs_x2" / name).read_bytes())
        got = decoded(body)
        assert got.shape == expected.shape == (400, 600, 3)
        assert np.abs(got - expected).max() <= 1, name


def test_format_png_is_asked_in_the_query(server: Server) -> None:
    status, headers, body = server.upscale(encoded(PHOTO, "JPEG", quality=90), "scale=2&format=png")
    assert status == 200 and headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(body)).format == "PNG"


def test_models_and_healthz(server: Server) -> None:
    status, headers, body = server.request("GET", "/models")
    assert status == 200 and headers["content-type"] == "application/json"
    (model,) = json.loads(body)["models"]
    assert model["name"] == "vdsr" and model["scales"] == [2, 3, 4] and model["default"]
    status, _, body = server.request("GET", "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, _, body = server.request("HEAD", "/healthz")  # load balancers' checks: GET's answer without its body
    assert status == 200 and body == b""
    status, headers, _ = server.request("HEAD", "/upscale")
    assert status == 405 and headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("query", "body", "status", "cause"),
    [
        ("scale=2", b"not an image at all", 422, "not an image file"),
        ("scale=2", b"", 400, "empty body"),
        ("scale=9", b"x", 400, "scale"),
        ("size=2", b"x", 400, "unknown query parameter"),
        ("scale=2&model=nope", b"x", 400, "not served"),
        ("scale=2&format=gif", b"x", 400, "is not one written here (png, jpg"),
        ("scale=abc&scale=2", b"x", 400, "'scale' given twice"),
    ],
)
def test_bad_requests_get_one_line_and_the_server_stays_up(
    server: Server, query: str, body: bytes, status: int, cause: str
) -> None:
    got, _, text = server.upscale(body, query)
    assert got == status and cause in text.decode() and text.decode().count("\n") == 1, text
    assert server.request("GET", "/healthz")[0] == 200


@pytest.mark.parametrize("forged", [forged_png(100_000, 100_000), forged_jpeg(60_000, 60_000)])
def test_a_forged_huge_header_is_refused_before_decoding(server: Server, forged: bytes) -> None:
    status, _, text = server.upscale(forged)
    assert status in (413, 422) and text.decode().count("\n") == 1, text
    assert "request body" in text.decode()


def test_a_body_over_the_limit_is_413_with_or_without_content_length(tight: Server) -> None:
    body = b"\0" * 300_000  # over 0.25 MiB
    status, _, text = tight.upscale(body)
    assert status == 413 and b"over the limit" in text
    connection = http.client.HTTPConnection("127.0.0.1", tight.port, timeout=REQUEST_S)  # chunked: no length
    try:
        connection.request("POST", "/upscale?scale=2", body=iter([body[:150_000], body[150_000:]]), encode_chunked=True)
        assert connection.getresponse().status == 413
    finally:
        connection.close()


def test_a_request_past_its_time_is_504(tight: Server) -> None:
    status, _, text = tight.upscale(encoded(sample_photo(512, 512, seed=3), "JPEG", quality=85))
    assert status == 504 and b"over the limit of 0.5 s" in text
    wait_idle(tight)  # its thread stops at its next tile: the slot comes back
    assert json.loads(tight.request("GET", "/healthz")[2])["stopped_early"] >= 1


def test_a_stalled_body_is_408_and_holds_no_slot(tight: Server) -> None:
    """A client that sends its headers and then stalls (slowloris) neither takes the one admission slot nor adds its
    time to the pace: the tight server (--max-queue 1) still admits a real request meanwhile."""
    wait_idle(tight)  # the slot of an earlier test's request comes back when its thread stops
    stalled = socket.create_connection(("127.0.0.1", tight.port), timeout=REQUEST_S)
    try:
        stalled.sendall(b"POST /upscale?scale=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
        status, _, body = tight.upscale(encoded(sample_photo(8, 8, seed=5), "PNG"))
        assert status != 503, body
        answer = http.client.HTTPResponse(stalled)
        answer.begin()
        assert answer.status == 408 and answer.read() == b"the body did not arrive within 0.5 s\n"
    finally:
        stalled.close()


def test_overload_is_503_with_retry_after_not_a_hang(tight: Server) -> None:
    image = encoded(sample_photo(512, 512, seed=4), "JPEG", quality=85)
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: tight.upscale(image), range(6)))
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {200, 503, 504} and 503 in statuses, statuses
    refused = [(headers, body) for status, headers, body in answers if status == 503]
    assert all(headers.get("retry-after") == "1" for headers, _ in refused), refused


def test_tiles_of_concurrent_requests_share_batches(server: Server) -> None:
    image = encoded(SQUARE, "PNG")
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: server.upscale(image), range(3)))
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert len({body for _, _, body in answers}) == 1  # batched or not, the same result
    assert json.loads(server.request("GET", "/healthz")[2])["largest_batch"] > 1


def cpu_ticks(server: Server, name: str) -> int:
    """CPU time (clock ticks) the server's processes whose command line holds `name` have used so far."""
    total = 0
    for pid in descendants(server.process.pid):
        try:
            if name in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
        except OSError:
            continue
    return total


def in_progress(server: Server) -> int:
    return int(json.loads(server.request("GET", "/healthz")[2])["in_progress"])


def wait_idle(server: Server) -> None:
    deadline = time.monotonic() + REQUEST_S
    while in_progress(server) and time.monotonic() < deadline:
        time.sleep(0.2)


def test_a_client_that_goes_away_stops_its_work(server: Server) -> None:
    """Serve cancels the request's task when its client disconnects; the thread upscaling it ran on to the end (tens
    of seconds of both cores here), its slot already given back. Now it stops at its next window (`stopped_early`)
    and holds its slot until then: once the replica says nothing is in progress, it computes nothing."""
    image = encoded(sample_photo(900, 900, seed=7), "JPEG", quality=85)
    stopped = json.loads(server.request("GET", "/healthz")[2])["stopped_early"]
    client = socket.create_connection(("127.0.0.1", server.port), timeout=REQUEST_S)
    client.sendall(b"POST /upscale?scale=2 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(image) + image)
    deadline = time.monotonic() + REQUEST_S
    while not in_progress(server) and time.monotonic() < deadline:  # admitted: its work has begun
        time.sleep(0.1)
    assert time.monotonic() < deadline, "the request was never seen in progress"
    client.close()
    wait_idle(server)
    before = cpu_ticks(server, "ServeReplica")
    time.sleep(2.0)
    assert cpu_ticks(server, "ServeReplica") - before < os.sysconf("SC_CLK_TCK") // 2  # under half a CPU-second
    assert json.loads(server.request("GET", "/healthz")[2])["stopped_early"] == stopped + 1


def test_command_errors_are_one_line_with_their_exit_codes() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for options, code, cause in (
            (["--port", port], 2, "cannot listen on"),
            (["--min-replicas", "1"], 2, "go together"),
            (["--model", "nowhere.onnx", "--port", str(free_port())], 2, "nowhere"),
            (["--max-queue", "0"], 2, "max-queue"),
        ):
            done = subprocess.run([*SERVE, *options], capture_output=True, timeout=120, check=False)
            err = done.stderr.decode()
            assert done.returncode == code and cause in err and err.count("\n") == 1, (options, err)


def test_sigterm_stops_serve_and_every_ray_process(server: Server) -> None:
    """Last: it stops the module's normal server, after the request in progress is answered (Serve's own shutdown
    stopped its proxy at once: the client got no answer)."""
    family = descendants(server.process.pid)
    assert family  # Ray's processes: GCS, raylet, Serve's controller, proxy, replica
    with ThreadPoolExecutor(1) as pool:  # a request in progress when the signal comes is answered first
        answer = pool.submit(server.upscale, encoded(sample_photo(300, 300, seed=8), "JPEG", quality=85))
        deadline = time.monotonic() + REQUEST_S
        while not in_progress(server) and not answer.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        server.process.send_signal(signal.SIGTERM)
        assert answer.result()[0] == 200
    assert server.process.wait(90) == 0, server.log.read_text()[-3000:]
    deadline = time.monotonic() + 30
    while any(running(pid) for pid in family) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [pid for pid in family if running(pid)]
    assert "stopped" in server.log.read_text()
