"""vdsr-bench as the design uses it (issue 37): `vdsr-bench --dataset Set5 --scale 2` finds the data by one rule and
scores the paper's methods; `--download` fetches a known set safely. Downloads come from an HTTP server on loopback
serving archives made here: no test touches the internet."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from extras import without
from PIL import Image
from typer.testing import CliRunner

from vdsr.bench import datasets
from vdsr.bench.cli import app
from vdsr.bench.datasets import DATA_DIR_ENV, ImageSize
from vdsr.bench.download import SetManifest, Source, download_set, png_max_bytes, set_manifest, source_for
from vdsr.errors import DatasetError, UsageError

runner = CliRunner()
Serve = Callable[[str, bytes], str]  # (path, body) -> its URL


@pytest.fixture
def serve() -> Iterator[Serve]:
    """An HTTP server on 127.0.0.1 (a free port) serving the bodies it is given; stopped at the end."""
    bodies: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
            body = bodies.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, format: str, *args: object) -> None:  # quiet: no lines on the test's stderr
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def add(path: str, body: bytes) -> str:
        bodies[path] = body
        return f"http://127.0.0.1:{server.server_address[1]}{path}"

    yield add
    server.shutdown()
    server.server_close()
    thread.join()


def png(seed: int, size: tuple[int, int] = (12, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


IMAGES = {"a.png": png(1), "b.png": png(2)}


def fake_manifest(images: dict[str, bytes] = IMAGES) -> SetManifest:
    """A set of two 12x10 RGB PNGs, as the shipped manifests describe a set: hashes and image sizes."""
    sha256 = {name: hashlib.sha256(data).hexdigest() for name, data in images.items()}
    max_bytes = {name: png_max_bytes(ImageSize(12, 10, "RGB")) for name in images}
    return SetManifest("Fake", sha256, max_bytes, max_total=8 << 20)


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tarred(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A tar.gz of `members`, and symbolic links (name -> target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return buffer.getvalue()


def nothing_left(data_dir: Path) -> bool:
    """No set and no temporary folder in `data_dir` (it may not even exist)."""
    return not data_dir.exists() or not list(data_dir.iterdir())


def test_a_good_archive_is_installed_whole(serve: Serve, tmp_path: Path) -> None:
    url = serve("/fake.zip", zipped({f"Fake/{n}": d for n, d in IMAGES.items()} | {"Fake/readme.txt": b"hi"}))
    seen: list[int] = []
    folder = download_set(fake_manifest(), tmp_path / "data", Source(url), on_bytes=seen.append)
    assert folder == tmp_path / "data" / "Fake" and sum(seen) > 0
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == IMAGES  # the manifest's files only
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["Fake"]  # no temporary left beside it


def test_a_tar_gz_takes_the_files_of_its_folder_and_checks_the_archive_hash(serve: Serve, tmp_path: Path) -> None:
    """The public mirrors' layout: Fake_HR/ beside Fake_LR_x2/ with the same names; the recorded hash is checked."""
    body = tarred({f"Fake_LR_x2/{n}": png(9, (6, 5)) for n in IMAGES} | {f"Fake_HR/{n}": d for n, d in IMAGES.items()})
    url = serve("/Fake_HR.tar.gz", body)
    wrong = Source(url, folder="Fake_HR", archive_hash="md5:" + "0" * 32)
    with pytest.raises(DatasetError, match=f"the archive from {url} has md5 {hashlib.md5(body).hexdigest()}"):
        download_set(fake_manifest(), tmp_path / "data", wrong)
    assert nothing_left(tmp_path / "data")
    right = Source(url, folder="Fake_HR", archive_hash="md5:" + hashlib.md5(body).hexdigest())
    folder = download_set(fake_manifest(), tmp_path / "data", right)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == IMAGES


def test_a_hash_mismatch_installs_nothing_and_lists_the_files(serve: Serve, tmp_path: Path) -> None:
    altered = IMAGES | {"b.png": png(3)}
    url = serve("/fake.zip", zipped({"a.png": altered["a.png"], "b.png": altered["b.png"]}))
    manifest = fake_manifest()
    manifest.sha256["c.png"], manifest.max_bytes["c.png"] = "1" * 64, 1 << 20
    with pytest.raises(DatasetError) as raised:
        download_set(manifest, tmp_path / "data", Source(url))
    assert str(raised.value).startswith(f"Fake: 2 of 3 files from {url} fail verification; nothing installed")
    assert raised.value.problems == [
        "c.png: not in the archive",
        f"b.png: sha256 {hashlib.sha256(altered['b.png']).hexdigest()[:16]}... does not match the manifest's "
        f"{manifest.sha256['b.png'][:16]}...",
    ]
    assert nothing_left(tmp_path / "data")


@pytest.mark.parametrize("member", ["../a.png", "/tmp/a.png", "Fake/../../a.png", "C:\\a.png", "..\\a.png"])
def test_a_hostile_archive_is_refused_whole(serve: Serve, tmp_path: Path, member: str) -> None:
    url = serve("/hostile.zip", zipped({"b.png": IMAGES["b.png"], member: IMAGES["a.png"]}))
    data = tmp_path / "deep" / "data"
    with pytest.raises(DatasetError, match="points outside the archive: refused, nothing installed"):
        download_set(fake_manifest(), data, Source(url))
    assert nothing_left(data) and not (tmp_path / "deep" / "a.png").exists() and not (tmp_path / "a.png").exists()


def test_links_and_oversized_members_are_refused(serve: Serve, tmp_path: Path) -> None:
    """A symbolic link under a manifest name; a member bigger than a PNG of its image size can be (a zip bomb: a
    small archive that unpacks to gigabytes); a stream that unpacks to more than the whole set can hold."""
    link = serve("/link.tar.gz", tarred({"b.png": IMAGES["b.png"]}, links={"a.png": "/etc/passwd"}))
    with pytest.raises(DatasetError, match="'a.png' is a link or special file, not an image: refused"):
        download_set(fake_manifest(), tmp_path / "data", Source(link))
    bomb = bytes(2 << 20)  # 2 MiB of zeros: a few KiB deflated, more than a 12x10 PNG may be (1 MiB + a little)
    for url in (serve("/bomb.zip", zipped({"a.png": bomb})), serve("/bomb.tar.gz", tarred({"a.png": bomb}))):
        with pytest.raises(DatasetError, match="'a.png' says it is 2097152 bytes, more than its image can be"):
            download_set(fake_manifest(), tmp_path / "data", Source(url))
    stream = serve("/stream.tar.gz", tarred({"padding.bin": bytes(9 << 20), **IMAGES}))  # over max_total, unnamed
    with pytest.raises(DatasetError, match="the archive unpacks to more than the set can hold"):
        download_set(fake_manifest(), tmp_path / "data", Source(stream))
    assert nothing_left(tmp_path / "data")


def test_unreachable_or_unreadable_sources_are_dataset_errors(serve: Serve, tmp_path: Path) -> None:
    missing = serve("/other.zip", b"").rsplit("/", 1)[0] + "/missing.zip"  # a path the server does not have
    with pytest.raises(DatasetError, match=r"Fake: cannot download .*/missing.zip \(HTTP 404"):
        download_set(fake_manifest(), tmp_path / "data", Source(missing))
    with pytest.raises(DatasetError, match="not a readable zip, tar or tar.gz archive"):
        download_set(fake_manifest(), tmp_path / "data", Source(serve("/page.html", b"<html>not an archive</html>")))
    with pytest.raises(UsageError, match="an http:// or https:// URL is needed"):
        download_set(fake_manifest(), tmp_path / "data", Source(f"file://{tmp_path}/x.zip"))
    assert nothing_left(tmp_path / "data")


def test_sources_are_recorded_once_and_can_be_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    assert source_for("Urban100").url.startswith("https://huggingface.co/datasets/eugenesiow/Urban100/")
    assert source_for("Urban100").archive_hash == "md5:65d9d84a34b72c6f7ca1e26a12df1e4c"
    with pytest.raises(UsageError, match="no public archive is recorded for T91"):
        source_for("T91")
    monkeypatch.setenv("VDSR_DATASET_URL_T91", "http://127.0.0.1:1/t91.zip")
    assert source_for("T91") == Source("http://127.0.0.1:1/t91.zip")  # another copy: only its files are checked
    manifest = set_manifest("Urban100")
    assert len(manifest.sha256) == 100 and manifest.max_bytes["img_001.png"] > 1024 * 644 * 3


def test_download_fetches_a_known_set_then_scores_it(
    serve: Serve, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vdsr-bench --dataset Set5 --download`: fetched (here from a copy on loopback) into the per-user data folder,
    checked against the shipped manifest, then scored; a second run finds it there."""
    user = tmp_path / "user" / "datasets"
    monkeypatch.setattr(datasets, "user_datasets_dir", lambda: user)
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    archive = zipped({f"Set5_HR/{p.name}": p.read_bytes() for p in sorted((data_dir / "Set5").glob("*.png"))})
    monkeypatch.setenv("VDSR_DATASET_URL_SET5", serve("/Set5_HR.zip", archive))
    args = ["--dataset", "Set5", "--scale", "2", "-m", "bicubic", "--download", "--json", str(tmp_path / "r.json")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"Set5: installed in {user / 'Set5'}, every file verified" in result.stderr
    cell = json.loads((tmp_path / "r.json").read_text())["results"][0]
    assert cell["dataset"] == "Set5" and cell["verified"] and abs(cell["psnr"] - 33.66) < 0.02
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and f"Set5: already in {user / 'Set5'}, not downloaded" in again.stderr
    refused = runner.invoke(app, ["--dataset", str(tmp_path), "--download"])
    assert refused.exit_code == 2 and "--download fetches a known set" in refused.stderr


def test_the_designs_usage_finds_the_data_in_the_per_user_folder(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vdsr-bench --dataset Set5 --scale 2` with neither --data-dir nor $VDSR_DATA_DIR: the per-user data folder."""
    user = tmp_path / "user" / "datasets"
    monkeypatch.setattr(datasets, "user_datasets_dir", lambda: user)
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    shutil.copytree(data_dir / "Set5", user / "Set5")
    result = runner.invoke(app, ["--dataset", "Set5", "--scale", "2", "-m", "bicubic", "--json", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r").read_text())["results"][0]["verified"]


def test_by_default_the_bench_scores_the_papers_methods(tmp_path: Path, tiny_model: dict[str, Path]) -> None:
    """Bicubic, SRCNN and VDSR (the shipped models) without --method; with --weights, bicubic and what they hold."""
    (tmp_path / "photos").mkdir()
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(
        tmp_path / "photos" / "a.png"
    )
    result = runner.invoke(app, ["-d", str(tmp_path / "photos"), "-s", "2", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "r.json").read_text())
    assert [c["method"] for c in document["results"]] == ["bicubic", "srcnn", "vdsr"]
    assert {c["backend"] for c in document["results"][1:]} == {"onnxruntime-cpu"}
    given = ["-d", str(tmp_path / "photos"), "-s", "2", "--weights", str(tiny_model["onnx"])]
    result = runner.invoke(app, [*given, "--json", str(tmp_path / "w.json")])
    assert result.exit_code == 0, result.output
    assert [c["method"] for c in json.loads((tmp_path / "w.json").read_text())["results"]] == ["bicubic", "vdsr"]


def test_without_onnx_runtime_the_default_methods_say_which_extra_to_install(data_dir: Path, tmp_path: Path) -> None:
    """The base install (no `cpu` extra) cannot run the shipped graphs: one line saying what to install, exit 2."""
    program = without(("onnxruntime",), module="vdsr.bench.cli", prog="vdsr-bench")
    command = [sys.executable, "-c", program, "--dataset", "Set5", "--scale", "2", "--data-dir", str(data_dir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr.strip().splitlines()[-1] == 'error: vdsr-bench -m srcnn needs onnxruntime: pip install "vdsr[cpu]"'
    )


def test_downloads_go_to_the_first_place_looked_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert datasets.download_dir(None) == tmp_path / "env"  # was the per-user folder, where $VDSR_DATA_DIR was set
    assert datasets.download_dir(tmp_path / "opt") == tmp_path / "opt"
    monkeypatch.delenv(DATA_DIR_ENV)
    assert datasets.download_dir(None) == datasets.user_datasets_dir()
