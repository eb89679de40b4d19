"""vdsr-run on awkward trees and outputs (issue 37): deep trees, roots, outputs that cannot be written, FIFOs and
devices as inputs, Ctrl-C, and what the progress line says. The shipped srcnn on ONNX Runtime's CPU backend, tiny
images: each run takes well under a second."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from io import StringIO
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from vdsr.errors import UsageError
from vdsr.runtime import console
from vdsr.runtime.backends.onnx_runtime import OnnxRuntimeBackend
from vdsr.runtime.cli import app
from vdsr.runtime.console import WorkProgress, figure
from vdsr.runtime.places import MAX_DEPTH, local
from vdsr.runtime.planning import beside

MODEL = ["--model", "srcnn", "--backend", "onnxruntime-cpu"]


def run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*(str(a) for a in args), *MODEL])
    return result.exit_code, result.output


def lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def save(path: Path, seed: int = 0, shape: tuple[int, ...] = (8, 10, 3)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)).save(path)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    for i, name in enumerate(["a.png", "b.png", "c.jpg"]):
        save(tmp_path / "photos" / name, i)
    return tmp_path / "photos"


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """The shapes the backend was asked to compute."""
    calls: list[tuple[int, ...]] = []
    real = OnnxRuntimeBackend.run

    def counted(self: OnnxRuntimeBackend, batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        return real(self, batch)

    monkeypatch.setattr(OnnxRuntimeBackend, "run", counted)
    return calls


def make_deep(top: Path, levels: int, image: bool = False) -> None:
    """`levels` nested folders named "d" below `top`, made through folder descriptors (the whole path may be longer
    than a path the system takes at once); an image in the deepest one if asked."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(levels):
            os.mkdir("d", dir_fd=fd)
            deeper = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        if image:
            with os.fdopen(os.open("x.png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
                Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(f, "PNG")
    finally:
        os.close(fd)


def remove_deep(top: Path) -> None:
    """Remove a tree make_deep made, deepest first: shutil.rmtree, and pytest's clean-up of old temporary folders,
    recurse a level a call and would end in RecursionError on it."""
    fds = [os.open(top, os.O_RDONLY)]
    while "d" in os.listdir(fds[-1]):
        fds.append(os.open("d", os.O_RDONLY, dir_fd=fds[-1]))
    while fds:
        fd = fds.pop()
        for name in os.listdir(fd):  # the deeper "d" is gone already: files only
            os.unlink(name, dir_fd=fd)
        os.close(fd)
        if fds:
            os.rmdir("d", dir_fd=fds[-1])


@pytest.fixture
def deep(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """make_deep below tmp_path, its trees removed after the test."""
    made: list[Path] = []

    def make(name: str, levels: int, image: bool = False) -> Path:
        made.append(tmp_path / name)
        make_deep(tmp_path / name, levels, image)
        return tmp_path / name

    yield make
    for top in made:
        remove_deep(top)


def test_a_tree_thousands_of_levels_deep_is_refused_in_one_line(
    tmp_path: Path, computed: list, deep: Callable[..., Path]
) -> None:
    """Found by issue 37: --recursive on a 1200-level tree ended in RecursionError."""
    deep("deep", 1200)
    save(tmp_path / "deep" / "top.png")
    code, output = run(tmp_path / "deep", "-s", "2", "-r")
    assert code == 2 and "Recursion" not in output, output
    (line,) = lines(output)
    assert line.startswith("error: ") and f"more than {MAX_DEPTH} levels of folders below" in line
    assert line.startswith(f"error: {tmp_path / 'deep'}{'/d' * (MAX_DEPTH + 1)}: ")  # the first folder too deep
    assert not computed and not (tmp_path / "deep_x2").exists()  # found before any work


def test_the_deepest_level_read_and_links_to_folders_not_followed(tmp_path: Path, deep: Callable[..., Path]) -> None:
    deep("ok", MAX_DEPTH, image=True)
    assert local(tmp_path / "ok").files.images(tmp_path / "ok", recursive=True) == [
        PurePosixPath(*["d"] * MAX_DEPTH, "x.png")
    ]
    deep("over", MAX_DEPTH + 1, image=True)
    with pytest.raises(UsageError, match=f"more than {MAX_DEPTH} levels"):
        local(tmp_path / "over").files.images(tmp_path / "over", recursive=True)
    tree = tmp_path / "tree"
    save(tree / "sub" / "a.png")
    (tree / "sub" / "up").symlink_to("..")  # loops of links: listed as names, never walked
    (tree / "self").symlink_to(".")
    assert local(tree).files.images(tree, recursive=True) == [PurePosixPath("sub/a.png")]


@pytest.mark.parametrize(
    ("path", "folder", "expected"),
    [
        (PurePosixPath("/a/photos"), True, "/a/photos_x2"),
        (PurePosixPath("/a/photos.2020"), True, "/a/photos.2020_x2"),
        (PurePosixPath("/a/cat.png"), False, "/a/cat_x2.png"),
        (PureWindowsPath("C:\\a\\photos"), True, "C:\\a\\photos_x2"),
    ],
)
def test_the_default_output_is_beside_the_input(path: PurePosixPath, folder: bool, expected: str) -> None:
    assert str(beside(path, "2", folder=folder)) == expected


@pytest.mark.parametrize(
    "root",
    [
        PurePosixPath("/"),
        PurePosixPath("."),
        PurePosixPath("a/.."),
        PureWindowsPath("C:\\"),
        PureWindowsPath("\\\\server\\share\\"),
    ],
)
def test_a_path_without_a_name_has_no_default_output(root: PurePosixPath) -> None:
    """Found by issue 37: `vdsr-run /` crashed with "PosixPath('/') has an empty name"."""
    with pytest.raises(UsageError, match="give --output"):
        beside(root, "2", folder=True)


def test_roots_and_dot_forms_on_the_command_line(photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, output = run("/", "-s", "2")  # refused before / is listed: its output would have no name
    assert code == 2 and lines(output) == [
        "error: /: a root folder has no name for its output, nor a folder beside it; give --output"
    ]
    monkeypatch.chdir(photos)
    assert run(".", "-s", "2")[0] == 0
    assert sorted(p.name for p in photos.with_name("photos_x2").iterdir()) == ["a.png", "b.png", "c.jpg"]
    (photos / "sub").mkdir()
    monkeypatch.chdir(photos / "sub")
    code, output = run("..", "-s", "2", "--skip-existing")
    assert code == 0 and "3 skipped" in output  # ".." is the photos folder: the same outputs


@pytest.mark.parametrize("kind", ["dangling link", "/proc/self/fd/out", "/proc/self/out", "a FIFO"])
def test_an_output_that_cannot_be_written_is_refused_before_any_image_is_computed(
    photos: Path, computed: list, kind: str
) -> None:
    """Found by issue 37: -o a dangling link (or a folder under /proc) failed each file after computing it."""
    out = photos.parent / "out"
    if kind == "dangling link":
        out.symlink_to(photos.parent / "nowhere")
    elif kind == "a FIFO":
        os.mkfifo(out)
    else:  # folders whose permissions may look writable (to root) where nothing can be created
        out = Path(kind)
        if not out.parent.is_dir():
            pytest.skip("no /proc here")
    for source in (photos, photos / "a.png"):
        code, output = run(source, "-s", "2", "-o", out)
        (line,) = lines(output)
        assert code == 2 and line.startswith(f"error: cannot write in {out}: "), output
    assert not computed and "upscaling" not in output
    assert not (photos.parent / "nowhere").exists()


def test_fifos_and_devices_as_inputs_are_named_as_what_they_are(photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by issue 37: a FIFO or a device as the input was "no such file or folder"; in a folder, a FIFO with an
    image's name was skipped without a word. None is ever opened (a FIFO would block the run)."""
    from vdsr.runtime import images

    os.mkfifo(photos / "pipe.png")
    monkeypatch.chdir(photos)  # a socket's name must be short: made here, by a relative name
    with socket.socket(socket.AF_UNIX) as server:
        server.bind("sock.png")
        opened: list[Path] = []
        real_open = images.open_regular

        def recorded(path: Path) -> object:
            opened.append(Path(path))
            return real_open(path)

        monkeypatch.setattr(images, "open_regular", recorded)
        code, output = run(photos / "pipe.png", "-s", "2")
        assert code == 2 and lines(output) == [f"error: {photos / 'pipe.png'}: not a regular file (a FIFO)"]
        code, output = run("/dev/null", "-s", "2", "-o", photos.parent / "null")
        assert code == 2 and lines(output) == ["error: /dev/null: not a regular file (a character device)"]
        code, output = run(photos, "-s", "2", "-o", photos.parent / "out")
        assert code == 1 and "3 written" in output, output
        assert f"failed: {photos / 'pipe.png'}: not a regular file (a FIFO)" in output
        assert f"failed: {photos / 'sock.png'}: not a regular file (a socket)" in output
    assert opened and all(p.name not in ("pipe.png", "sock.png") for p in opened)


def test_a_path_that_cannot_be_asked_is_not_called_missing(tmp_path: Path) -> None:
    """A loop of links (or a folder without permission) is there: its error says why it cannot be read."""
    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    code, output = run(tmp_path / "a.png", "-s", "2")
    assert code == 2 and "no such file" not in output and "symbolic links" in output, output


def test_ctrl_c_says_what_was_done_and_how_to_go_on(photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by issue 37: Ctrl-C on a folder run ended it with no word about what was written."""
    real = OnnxRuntimeBackend.run
    calls: list[int] = []

    def interrupted_at_the_second_image(self: OnnxRuntimeBackend, batch: np.ndarray) -> np.ndarray:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(OnnxRuntimeBackend, "run", interrupted_at_the_second_image)
    out = photos.parent / "out"
    code, output = run(photos, "-s", "2", "-o", out)
    assert code == 130, output
    assert lines(output)[-2].startswith("1 written, 0 skipped (existing), 0 failed")
    assert lines(output)[-1].startswith("interrupted: ") and "rerun with --skip-existing" in lines(output)[-1]
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]  # whole, and no temporary file left
    assert Image.open(out / "a.png").size == (20, 16)
    monkeypatch.setattr(OnnxRuntimeBackend, "run", real)
    code, output = run(photos, "-s", "2", "-o", out, "--skip-existing")
    assert code == 0 and "2 written, 1 skipped" in output


def test_ctrl_c_before_the_run_starts_exits_130(photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vdsr.runtime import cli

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "plan", interrupted)
    code, output = run(photos, "-s", "2")
    assert code == 130 and lines(output) == ["error: interrupted"]


def test_sigint_on_a_running_folder_exits_130_with_whole_files(tmp_path: Path) -> None:
    """The real signal: sent once the first result is written, to a run of 64 images, one at a time (CPU batch 1)."""
    for i in range(64):
        save(tmp_path / "in" / f"{i:02d}.png", i, (200, 300, 3))
    out = tmp_path / "out"
    program = [sys.executable, "-c", "from vdsr.runtime.cli import app; app()"]
    command = [*program, str(tmp_path / "in"), "-s", "2", "-o", str(out), *MODEL]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while run.poll() is None and time.monotonic() < deadline and not any(out.glob("*.png")):
        time.sleep(0.01)
    run.send_signal(signal.SIGINT)
    _, errors = run.communicate(timeout=120)
    assert run.returncode == 130, errors
    assert re.search(r"^\d+ written, 0 skipped \(existing\), 0 failed", errors, re.MULTILINE), errors
    assert "rerun with --skip-existing" in errors and "Traceback" not in errors
    written = sorted(out.iterdir())
    assert written and all(not p.name.startswith(".") for p in written)  # no temporary files
    for path in written:
        with Image.open(path) as image:
            assert image.size == (600, 400)
            image.load()  # whole


def test_progress_names_the_file_never_shows_zero_speed_and_ends_in_one_line(
    photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by issue 37: plain progress lines said "0.00 MP/s" (tiny images, or before any was written), never
    which file was being upscaled, and a last progress line came before the summary."""
    from vdsr.runtime import cli

    code, output = run(photos, "-s", "2", "-o", photos.parent / "quiet")
    assert code == 0 and lines(output)[-1].startswith("3 written, 0 skipped (existing), 0 failed"), output
    (start,) = [line for line in lines(output) if line.startswith("upscaling:")]  # then the summary closes the run
    assert start.startswith("upscaling: 0/3 files")
    monkeypatch.setattr(console, "PLAIN_PROGRESS_SECONDS", 0.0)  # a line at every update
    monkeypatch.setattr(cli, "MEASURED_SECONDS", 0.0)  # speeds from the first image on
    code, output = run(photos, "-s", "2", "-o", photos.parent / "out")
    assert code == 0, output
    progress = [line for line in lines(output) if line.startswith("upscaling:")]
    assert any(", b.png" in line for line in progress) and any(", c.jpg" in line for line in progress)
    assert "MP/s" in output and not re.search(r"\b0\.0+ MP/s", output)
    assert lines(output)[-1].startswith("3 written, 0 skipped (existing), 0 failed; ")


def test_figures_never_read_as_zero() -> None:
    assert [figure(x) for x in (0.0034, 0.0256, 0.5, 2.5, 123.456)] == ["0.0034", "0.026", "0.50", "2.50", "123.46"]


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_info_is_shown_as_given(terminal: bool) -> None:
    """A file name with [brackets] is a name, not markup, on the live bar as in plain lines."""
    out = StringIO()
    screen = Console(file=out, force_terminal=terminal, width=200, soft_wrap=True)
    with WorkProgress(screen, "upscaling", total=2, unit="images", every=0.0) as progress:
        progress.update(completed=1, info="[bold]cat[/bold].png")
        if terminal:
            progress._bar.refresh()  # type: ignore[union-attr]  # draw now, whatever the refresh rate
    assert "[bold]cat[/bold].png" in out.getvalue()
