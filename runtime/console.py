"""What every command shares: the typer app and command class (plain help with real defaults, shell completion,
`--version`, usage errors as one line), errors printed as one line on stderr with exit codes from one table
(vdsr.errors.exit_code), and progress that counts work: a live bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import importlib.util
import io
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TextIO, cast

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from typer.core import TyperCommand

from vdsr._version import __version__
from vdsr.errors import EXIT_FAILED, EXIT_INTERRUPTED, UsageError, VdsrError, exit_code

# click's base of usage errors: typer vendors click from 0.2x (typer._click) and depends on it before; its public
# BadParameter derives from it either way
_CLICK_EXCEPTION: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
PLAIN_PROGRESS_SECONDS = 10.0  # off a terminal, a progress line this often (and at the start and the end)


def error_console() -> Console:
    """stderr, no highlighting, lines never wrapped: a message or file name reads the same at any terminal width.
    A log that cannot be written (closed, on a full disk, its reader gone: `2>&1 | head`) loses its lines but never
    stops the work: the exit code still says what happened to the files."""
    return Console(file=cast(TextIO, _Unfailing(sys.stderr)), highlight=False, soft_wrap=True)


class _Unfailing(io.TextIOBase):
    """A text stream (None: closed at start) whose write and flush failures are dropped."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            if self.stream is not None:
                self.stream.write(text)
        except (OSError, ValueError):  # EPIPE, ENOSPC, EBADF; ValueError: written after close
            pass
        return len(text)

    def flush(self) -> None:
        try:
            if self.stream is not None:
                self.stream.flush()
        except (OSError, ValueError):
            pass

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", None) or "utf-8"  # rich writes only what it can encode

    def isatty(self) -> bool:
        try:
            return self.stream is not None and self.stream.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        if self.stream is None:
            raise OSError("stderr is closed")
        return self.stream.fileno()


def printable(text: object) -> str:
    """`text` with its control characters (a file name can hold escape sequences and newlines) written as Python
    escapes: for text printed without markup."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text))


def safe(text: object) -> str:
    """`text` as it can be shown on a terminal: control characters written as Python escapes, rich markup
    ([brackets] in names) escaped."""
    return escape(printable(text))


def figure(value: float) -> str:
    """A positive measure with two decimals, or as many as show its first two significant digits (0.0034, not
    0.00): a figure on screen never reads as zero when it is not."""
    decimals = 2 if value >= 0.1 or value <= 0 else 1 - math.floor(math.log10(value))
    return f"{value:.{decimals}f}"


def print_error(console: Console, error: Exception | str, label: str = "error") -> None:
    """One line per error: newlines inside the message (a file name's) are shown escaped, never as line breaks."""
    console.print(f"[red]{label}:[/red] {safe(error)}")


@contextmanager
def exit_on_errors(console: Console) -> Iterator[None]:
    """A VdsrError inside the block is printed as one error line and ends the command with its exit code."""
    try:
        yield
    except VdsrError as error:
        print_error(console, error)
        raise typer.Exit(exit_code(error)) from error


def make_app(doc: str | None) -> typer.Typer:
    """The app of one command. Help is plain text (typer's rich mode reads "[default: ...]" in help strings as
    markup and drops it) with every default shown; completion scripts install with --install-completion."""
    return typer.Typer(
        help=doc,
        rich_markup_mode=None,
        add_completion=True,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
    )


def require_modules(modules: tuple[str, ...], *, needs: str, extra: str) -> None:
    """UsageError (one line: what to install) if a module a command needs is not installed. Checked before the
    command imports them, so --help and --version work without its extras."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f'{needs} needs {", ".join(missing)}: pip install "vdsr[{extra}]"')


class Command(TyperCommand):
    """A command whose usage errors (a misspelt option, a value of the wrong type or out of its choices) print as
    one `error:` line and exit 2, as every other error of the toolkit does, instead of click's usage box."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        *,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var=complete_var, standalone_mode=False, **extra)
        previous = {}
        if threading.current_thread() is threading.main_thread():  # SIGTERM (timeout, systemd, Slurm, docker stop)
            names = ("SIGTERM", "SIGHUP")  # no SIGHUP on Windows; one ignored (nohup) stays ignored
            wanted = [
                s for s in (getattr(signal, n, None) for n in names) if s and signal.getsignal(s) != signal.SIG_IGN
            ]
            previous = {sig: signal.signal(sig, _interrupt) for sig in wanted}
        try:
            result = super().main(args, prog_name, complete_var=complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            print_error(error_console(), "aborted")
            sys.exit(EXIT_FAILED)
        except _CLICK_EXCEPTION as error:
            name = prog_name or Path(sys.argv[0]).name
            message = error.format_message().replace("Value error, ", "")  # type: ignore[attr-defined]
            print_error(error_console(), f"{message} (see {name} --help)")
            sys.exit(error.exit_code)  # type: ignore[attr-defined]
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: Any) -> Any:
        """The command; Ctrl-C that it does not answer itself is one `interrupted` line and exit 130 (typer would end
        with 130 and no word). SIGTERM and SIGHUP (unless ignored, as under nohup) are taken as Ctrl-C: results being
        written are finished whole, the summary so far is printed (a command that has its own handler, vdsr-train's
        and vdsr-serve's, keeps it)."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            print_error(error_console(), "interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _show_version(ctx: typer.Context, value: bool) -> None:
    if value:
        typer.echo(f"{ctx.find_root().info_name} (vdsr) {__version__}")
        raise typer.Exit()


def version_option() -> Any:
    """`--version` for a command's parameters: `version: Annotated[bool, version_option()] = False`."""
    return typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version and exit.")


class WorkProgress:
    """Progress of countable work (images, steps, scores) on `console`, fractions allowed (a band of tiles is part
    of an image). On a terminal a live bar; elsewhere (a log, CI, a batch system) a plain line at the start, every
    `every` seconds and at the end (not with `last_line=False`: for a command whose own summary closes the run),
    never cut mid-number and free of escape codes. `info` is shown as it is given, never read as markup."""

    def __init__(
        self,
        console: Console,
        label: str,
        *,
        total: float | None,
        unit: str,
        every: float | None = None,
        last_line: bool = True,
    ) -> None:
        self.console, self.label, self.unit = console, label, unit
        self.every = PLAIN_PROGRESS_SECONDS if every is None else every
        self.last_line = last_line
        self.total, self.completed, self.info = total, 0.0, ""
        self._bar: Progress | None = None
        self._task: Any = None
        self._last = -float("inf")
        self._start = time.monotonic()

    def __enter__(self) -> WorkProgress:
        if self.console.is_terminal:
            self._bar = Progress(
                TextColumn(self.label),
                BarColumn(),
                TextColumn("{task.fields[done]}"),
                TextColumn("{task.fields[info]}", markup=False),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total, info="", done=self._done())
        else:
            self._plain(force=True)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, error, trace)
        elif self.last_line:
            self._plain(force=True)

    def update(
        self,
        *,
        advance: float = 0.0,
        completed: float | None = None,
        total: float | None = None,
        info: str | None = None,
    ) -> None:
        self.completed = completed if completed is not None else self.completed + advance
        self.total = total if total is not None else self.total
        self.info = info if info is not None else self.info
        if self._bar is not None:
            self._bar.update(self._task, completed=self.completed, total=self.total, info=self.info, done=self._done())
        else:
            self._plain(force=False)

    def print(self, text: str) -> None:
        """A line that stays (above the bar on a terminal)."""
        (self._bar.console if self._bar is not None else self.console).print(text)

    def _done(self) -> str:
        """ "12/300 steps", "1.4/3 images": whole numbers without decimals, fractions with one."""

        def amount(x: float | None) -> str:
            return "?" if x is None else f"{x:.0f}" if x == int(x) else f"{x:.1f}"

        return f"{amount(self.completed)}/{amount(self.total)} {self.unit}"

    def _plain(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        info = f", {self.info}" if self.info else ""
        line = f"{self.label}: {self._done()}{info}, {now - self._start:.0f} s"
        self.console.print(line, markup=False, highlight=False)
