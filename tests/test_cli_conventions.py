"""What every command owes its users (issue 15): help that shows every real default and every choice, --version,
usage errors as one line with exit 2, and progress as plain lines when stderr is not a terminal."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from vdsr._version import __version__
from vdsr.bench.cli import app as bench_app
from vdsr.errors import UsageError
from vdsr.export.cli import app as export_app
from vdsr.runtime.backends.specs import BACKENDS
from vdsr.runtime.cli import app as run_app
from vdsr.runtime.images import FORMAT_SUFFIXES, output_format
from vdsr.train.cli import app as train_app

APPS = {"vdsr-run": run_app, "vdsr-bench": bench_app, "vdsr-train": train_app, "vdsr-export": export_app}
runner = CliRunner()


def help_blocks(app: typer.Typer) -> dict[str, str]:
    """Each option's help text (its lines joined), keyed by its long name; rendered 200 columns wide so that the test
    does not depend on the terminal it runs in."""
    text = runner.invoke(app, ["--help"], terminal_width=200, prog_name="cmd").output
    blocks: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        found = re.match(r"\s+(?:-\w, )?(--[\w-]+)", line)
        if found:
            name = found[1]
            blocks[name] = line
        elif name and line.startswith(" " * 10):
            blocks[name] += " " + line.strip()
        else:
            name = None
    return blocks


@pytest.mark.parametrize("command", APPS)
def test_every_option_shows_its_default(command: str) -> None:
    """vdsr-train's help showed "vdsr or srcnn ." (rich markup ate "[default: vdsr]") and no default for --seed,
    --batch-size, ... Every option that is not required, a plain on/off flag or a built-in shows one."""
    command_object = typer.main.get_command(APPS[command])
    blocks = help_blocks(APPS[command])
    builtin = {"--help", "--version", "--install-completion", "--show-completion"}
    for param in command_object.params:
        long_names = [o for o in param.opts if o.startswith("--")]
        if param.param_type_name != "option" or not long_names or long_names[0] in builtin:
            continue
        plain_flag = getattr(param, "is_flag", False) and not param.secondary_opts  # type: ignore[attr-defined]
        if param.required or plain_flag:
            continue
        block = blocks[long_names[0]]
        assert re.search(r"\[default: [^\]]+", block), f"{command} {long_names[0]}: no default in {block!r}"
        assert not re.search(r"\s\.(\s|$)", block), f"{command} {long_names[0]}: help text lost a part: {block!r}"


def test_choices_are_listed_in_help() -> None:
    blocks = help_blocks(run_app)
    assert all(name in blocks["--backend"] for name in BACKENDS)
    assert all(f"|{suffix}" in blocks["--format"] or f"<{suffix}|" in blocks["--format"] for suffix in FORMAT_SUFFIXES)
    assert "<auto|fp32|fp16|int8>" in blocks["--precision"]


@pytest.mark.parametrize("command", APPS)
def test_version(command: str) -> None:
    result = runner.invoke(APPS[command], ["--version"], prog_name=command)
    assert result.exit_code == 0 and result.output.strip() == f"{command} (vdsr) {__version__}"


@pytest.mark.parametrize("command", APPS)
@pytest.mark.parametrize("args", [["--no-such-option"], ["--scale", "abc"]])
def test_usage_errors_are_one_line_and_exit_2(command: str, args: list[str]) -> None:
    result = runner.invoke(APPS[command], ["x", *args] if command == "vdsr-run" else args, prog_name=command)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert f"(see {command} --help)" in result.output


def test_a_single_file_with_an_image_name_as_output_is_written_as_that_file(
    tmp_path: Path, tiny_model: dict[str, Path]
) -> None:
    """`vdsr-run scene.png -s 2 -o out.png` created a folder out.png/ (Real-ESRGAN's convention: -o names the file)."""
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "scene.png")
    model = ["--model", str(tiny_model["onnx"])]
    result = runner.invoke(run_app, [str(tmp_path / "scene.png"), "-s", "2", "-o", str(tmp_path / "out.png"), *model])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.png").is_file() and Image.open(tmp_path / "out.png").size == (16, 16)
    result = runner.invoke(run_app, [str(tmp_path / "scene.png"), "-s", "2", "-o", str(tmp_path / "o.jpg"), *model])
    assert result.exit_code == 0 and Image.open(tmp_path / "o.jpg").format == "JPEG"
    result = runner.invoke(run_app, [str(tmp_path / "scene.png"), "-s", "2", "-o", str(tmp_path / "folder"), *model])
    assert result.exit_code == 0 and (tmp_path / "folder" / "scene.png").is_file()  # no image suffix: a folder
    slashed = [str(tmp_path / "scene.png"), "-s", "2", "-o", f"{tmp_path / 'dir.png'}/", *model]  # found by review:
    result = runner.invoke(run_app, slashed)  # a file named dir.png was written
    assert result.exit_code == 0 and (tmp_path / "dir.png" / "scene.png").is_file()
    clash = [str(tmp_path / "scene.png"), "-s", "2", "-o", str(tmp_path / "c.jpg"), "--format", "png", *model]
    result = runner.invoke(run_app, clash)
    assert result.exit_code == 2 and "another format than --format png" in result.output


def test_progress_is_plain_lines_off_a_terminal(tmp_path: Path, tiny_model: dict[str, Path]) -> None:
    """Off a terminal nothing was printed while the run worked; now a line at the start and every few seconds, with
    fractions of an image as its bands of tiles finish; the summary is the one closing line."""
    for i in range(2):
        Image.fromarray(np.full((30, 20, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    args = [str(tmp_path), "-s", "2", "--model", str(tiny_model["onnx"]), "--tile", "16", "-o", str(tmp_path / "o")]
    result = runner.invoke(run_app, args)
    assert result.exit_code == 0, result.output
    assert "upscaling: 0/2 files" in result.output and "\x1b[" not in result.output
    assert result.output.splitlines()[-1].startswith("2 written, 0 skipped (existing), 0 failed")  # one closing line


def test_the_api_reports_bands(tmp_path: Path, tiny_model: dict[str, Path]) -> None:
    from vdsr import Upscaler

    Image.fromarray(np.zeros((40, 10), np.uint8)).save(tmp_path / "tall.png")
    fractions: list[float] = []
    with Upscaler(tiny_model["onnx"], tile=16) as upscaler:
        report = upscaler.upscale_folder(tmp_path / "tall.png", 2, tmp_path / "o", on_band=fractions.append)
    assert report.written and len(fractions) == 5 and fractions == sorted(fractions) and fractions[-1] == 1.0


def test_a_folder_report_holds_failures_as_records_and_reads_well(tmp_path: Path, tiny_model: dict[str, Path]) -> None:
    from vdsr import Upscaler

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with Upscaler(tiny_model["onnx"]) as upscaler:
        report = upscaler.upscale_folder(tmp_path, 2, tmp_path.parent / "report_out")
    (failure,) = report.failed
    assert failure.path == tmp_path / "bad.png" and "not an image file" in failure.cause and failure.output is None
    assert report.summary().startswith("1 written (0.0 MP), 0 skipped (existing), 1 failed")
    assert str(report).splitlines()[1] == f"failed: {tmp_path / 'bad.png'}: {failure.cause}"


def test_progress_never_goes_backwards(
    tmp_path: Path, tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by review: an image counted as done only once written (after the next one was upscaled), so the next
    image's bands were added to one image too few: 1/3 then 0.3/3."""
    from vdsr.runtime import console

    monkeypatch.setattr(console, "PLAIN_PROGRESS_SECONDS", 0.0)  # a line at every update
    for i in range(3):
        Image.fromarray(np.full((40, 12, 3), 60 * i, np.uint8)).save(tmp_path / f"{i}.png")
    args = [str(tmp_path), "-s", "2", "--model", str(tiny_model["onnx"]), "--tile", "16", "-o", str(tmp_path / "o")]
    result = runner.invoke(run_app, args)
    assert result.exit_code == 0, result.output
    done = [float(m) for m in re.findall(r"upscaling: ([\d.]+)/3 files", result.output)]
    assert len(done) > 6 and done == sorted(done) and done[-1] == 3


def test_one_upscaler_in_two_threads_gives_each_its_own_results(tiny_model: dict[str, Path]) -> None:
    """Found by review: list batching swapped the network the whole Upscaler used; another thread's image came back
    black while it ran."""
    import threading

    from vdsr import Upscaler

    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (10, 9, 3), dtype=np.uint8) for _ in range(4)]
    single = rng.integers(0, 256, (12, 7, 3), dtype=np.uint8)
    with Upscaler(tiny_model["onnx"]) as upscaler:
        expected_frames, expected_single = [upscaler.upscale(f, 2) for f in frames], upscaler.upscale(single, 2)
        wrong: list[str] = []

        def lists() -> None:
            for _ in range(15):
                got = upscaler.upscale(frames, 2)
                if any(not np.array_equal(a, b) for a, b in zip(got, expected_frames, strict=True)):
                    wrong.append("list")

        def singles() -> None:
            for _ in range(30):
                if not np.array_equal(upscaler.upscale(single, 2), expected_single):
                    wrong.append("single")

        threads = [threading.Thread(target=lists), threading.Thread(target=singles)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not wrong


def test_list_items_are_named_in_errors_and_nested_lists_stay_one_image(tiny_model: dict[str, Path]) -> None:
    from vdsr import Upscaler

    with Upscaler(tiny_model["onnx"]) as upscaler:
        with pytest.raises(ValueError, match="<image 1>: float pixel values must lie in"):
            upscaler.upscale([np.zeros((4, 4), np.uint8), np.full((4, 4), 200.0), np.zeros((4, 4), np.uint8)], 2)
        nested = np.full((4, 5), 0.5, np.float32).tolist()  # a plain Python list of rows is one image, as before
        assert np.shape(upscaler.upscale(nested, 2)) == (8, 10)


def test_single_file_output_names_and_choices(tmp_path: Path, tiny_model: dict[str, Path]) -> None:
    from vdsr.runtime.backends.specs import parse_device

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "g.png")
    model = ["--model", str(tiny_model["onnx"])]
    result = runner.invoke(run_app, [str(tmp_path / "g.png"), "-s", "2", "-o", str(tmp_path / "o.gif"), *model])
    assert result.exit_code == 2 and "cannot write '.gif'" in result.output  # not a folder named o.gif
    for suffix in (".pbm", ".pfm"):  # PIL would write 8-bit P5/P6 data under a bitmap's or a float map's name
        with pytest.raises(UsageError, match=f"cannot write '\\{suffix}'"):
            output_format(Path(f"o{suffix}"))
    result = runner.invoke(run_app, [str(tmp_path / "g.png"), "-s", "2", "-o", str(tmp_path / "o.pgm"), *model])
    assert result.exit_code == 0 and (tmp_path / "o.pgm").is_file()
    Image.fromarray(np.dstack([np.arange(64, dtype=np.uint8).reshape(8, 8)] * 3)).save(tmp_path / "rgb_gray.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), np.uint8)).save(tmp_path / "colour.png")
    result = runner.invoke(run_app, [str(tmp_path / "rgb_gray.png"), "-s", "2", "-o", str(tmp_path / "g.pgm"), *model])
    with Image.open(tmp_path / "g.pgm") as written:  # R = G = B: written as the gray image it is (P5), not as P6
        assert result.exit_code == 0 and written.mode == "L" and written.size == (16, 16)
    result = runner.invoke(run_app, [str(tmp_path / "colour.png"), "-s", "2", "-o", str(tmp_path / "c.pgm"), *model])
    assert result.exit_code == 1 and "c.pgm: PGM holds gray only" in result.output
    assert not (tmp_path / "c.pgm").exists()
    weights = ["--model", str(tiny_model["weights"]), "--backend", "TORCH-CPU", "--precision", "FP32"]  # any case
    result = runner.invoke(run_app, [str(tmp_path / "g.png"), "-s", "2", "-o", str(tmp_path / "t.png"), *weights])
    assert result.exit_code == 0, result.output
    with pytest.raises(ValueError, match="Unknown device 'cuda:'"):
        parse_device("cuda:")


def test_output_names_keep_every_digit_of_the_scale(tmp_path: Path, tiny_model: dict[str, Path]) -> None:
    """Found by review: a file without a suffix at x2.5 was written as scan_x2.png (the ".5" taken for its suffix),
    over a x2 result; scales that differ past 10 digits shared a folder, and x1.00000000001 was labelled x1."""
    from vdsr.scale import scale_label

    assert [scale_label(s) for s in (2, 2.0, 2.5, 2.00000000001, 1.00000000001)] == [
        "2",
        "2",
        "2.5",
        "2.00000000001",
        "1.00000000001",
    ]
    model = ["--model", str(tiny_model["onnx"])]
    Image.fromarray(np.zeros((8, 6), np.uint8)).save(tmp_path / "scan", format="PNG")
    for scale in ("2", "2.5"):
        result = runner.invoke(run_app, [str(tmp_path / "scan"), "-s", scale, *model])
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan", "scan_x2.5.png", "scan_x2.png"]
    with Image.open(tmp_path / "scan_x2.png") as x2, Image.open(tmp_path / "scan_x2.5.png") as x25:
        assert (x2.size, x25.size) == ((12, 16), (15, 20))
    (tmp_path / "d").mkdir()
    Image.fromarray(np.zeros((8, 6), np.uint8)).save(tmp_path / "d" / "w.png")
    for scale in ("2", "2.00000000001"):
        assert runner.invoke(run_app, [str(tmp_path / "d"), "-s", scale, *model]).exit_code == 0
    assert (tmp_path / "d_x2" / "w.png").is_file() and (tmp_path / "d_x2.00000000001" / "w.png").is_file()


def test_a_rerun_with_skip_existing_still_reports_a_name_collision(tmp_path: Path, tiny_model: dict[str, Path]) -> None:
    """Found by review: the rerun said "0 written, 2 skipped, 0 failed" and exit 0, though p.png never had a result."""
    (tmp_path / "c").mkdir()
    for name in ("p.jpg", "p.png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "c" / name)
    args = [str(tmp_path / "c"), "-s", "2", "--format", "png", "--model", str(tiny_model["onnx"])]
    for extra in ([], ["--skip-existing"]):
        result = runner.invoke(run_app, [*args, *extra])
        assert result.exit_code == 1 and "is also" in result.output, result.output
    assert "0 written, 1 skipped (existing), 1 failed" in result.output


def signalled_app(sig: int, reached: list[str]) -> typer.Typer:
    """A command that sends itself `sig`, then waits; `reached` gets a line if the wait was not interrupted."""
    import os
    import time

    from vdsr.runtime.console import Command, make_app

    app = make_app("a command that is sent a signal")

    @app.command(cls=Command)
    def main() -> None:
        os.kill(os.getpid(), sig)
        time.sleep(30)  # the handler interrupts this
        reached.append("after")

    return app


def test_sigterm_and_sighup_stop_a_command_as_ctrl_c_does() -> None:
    """SIGTERM (timeout, systemd, Slurm, docker stop) ended vdsr-run at once: exit 143, no summary, now and then a
    temporary file left. Now it is Ctrl-C: the command's own stop, its `interrupted` line, exit 130."""
    import signal

    def unhandled(signum: int, frame: object) -> None:  # what the test process would otherwise do: die
        raise RuntimeError(f"signal {signum} reached the test process's own handler")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        reached: list[str] = []
        original = signal.signal(sig, unhandled)
        try:
            result = runner.invoke(signalled_app(sig, reached), [])
            assert signal.getsignal(sig) is unhandled  # put back
        finally:
            signal.signal(sig, original)
        assert result.exit_code == 130 and "interrupted" in result.output and not reached, result.output


def test_an_ignored_sighup_stays_ignored_and_no_sighup_is_no_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by review: under nohup (SIGHUP ignored) the handler replaced SIG_IGN, so closing the terminal stopped
    the run; where there is no SIGHUP (Windows) every command failed with an AttributeError."""
    import signal

    reached: list[str] = []
    app = signalled_app(signal.SIGHUP, reached)
    original = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with pytest.MonkeyPatch.context() as patch:  # the command sleeps 30 s unless interrupted: make it short
            patch.setattr("time.sleep", lambda seconds: None)
            result = runner.invoke(app, [])
    finally:
        signal.signal(signal.SIGHUP, original)
    assert result.exit_code == 0 and reached == ["after"], result.output
    monkeypatch.delattr(signal, "SIGHUP")
    assert runner.invoke(run_app, ["--help"]).exit_code == 0


def test_a_log_that_cannot_be_written_does_not_stop_the_run(tmp_path: Path, tiny_model: dict[str, Path]) -> None:
    """Found by review: with stderr closed, full (/dev/full) or its reader gone (`2>&1 | head`), vdsr-run stopped
    at its first line, exit 1, nothing written. The lines are lost now, not the work."""
    import subprocess
    import sys

    for i in range(3):
        Image.fromarray(np.full((8, 8), 60 * i, np.uint8)).save(tmp_path / f"{i}.png")
    program = [sys.executable, "-c", "from vdsr.runtime.cli import app; app()"]
    command = [*program, str(tmp_path), "-s", "2", "--model", str(tiny_model["onnx"])]
    streams = {"closed": "closed", "full": "/dev/full"} if Path("/dev/full").exists() else {"closed": "closed"}
    for name, where in streams.items():
        out = tmp_path / f"out_{name}"
        if where == "closed":
            process = subprocess.Popen([*command, "-o", str(out)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
            assert process.stderr is not None
            process.stderr.close()  # every write to it fails with EPIPE
            code = process.wait(timeout=120)
        else:
            with open(where, "w") as full:
                code = subprocess.run([*command, "-o", str(out)], stderr=full, timeout=120, check=False).returncode
        assert code == 0 and sorted(p.name for p in out.iterdir()) == ["0.png", "1.png", "2.png"], name


def test_a_file_that_cannot_be_asked_about_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by review: a file in a folder without search permission was "not a regular file (cannot be asked:
    Permission denied)"; it is a file that cannot be read."""
    import os

    from vdsr.errors import ImageError
    from vdsr.runtime.places import LocalFiles

    locked = tmp_path / "b.png"
    Image.new("RGB", (8, 8)).save(locked)
    real_stat = os.stat

    def stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if Path(str(path)) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", stat)
    with pytest.raises(ImageError, match=r"b.png: cannot be read: Permission denied$"):
        LocalFiles().load(locked, max_pixels=10**6, shown=locked)
