"""The errors this package raises on purpose, and the exit code each means in the commands.

Every message is one line that names the offending file or value. Those about a value (a usage, an image, a model
file) are also ValueErrors, so code that caught ValueError before this hierarchy existed still does; nothing here
catches ValueError itself, so a bug is never mistaken for bad input.

    VdsrError
    ├── UsageError          the command or call cannot be carried out as given (exit 2)
    ├── ImageError          one image file (or array) cannot be used; the others still run (exit 1)
    ├── ModelError          a weights file, graph or checkpoint cannot be used (exit 1)
    ├── DatasetError        a benchmark or training set is missing or fails verification (exit 1)
    ├── TrainingError       a training run cannot start or go on (exit 1)
    ├── BackendUnavailable  an inference backend cannot run here: auto-selection skips it (exit 2 when asked for)
    └── BackendError        a backend failed while running: the whole run stops (exit 4)
"""

from __future__ import annotations

from pathlib import Path

# Exit codes of vdsr-run, vdsr-bench, vdsr-train and vdsr-export besides 0 (everything done)
EXIT_FAILED = 1  # some inputs failed (files, data sets, weights); the others were done
EXIT_USAGE = 2  # nothing was done: the command cannot be carried out as given
EXIT_STOPPED_EARLY = 3  # vdsr-train stopped by a signal or --max-minutes, checkpoint written
EXIT_BACKEND = 4  # a backend failure stopped the run; what was written before it is complete
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it), or SIGTERM/SIGHUP taken as it: the summary so far


class VdsrError(Exception):
    """Base of the errors raised on purpose; see exit_code()."""


class UsageError(VdsrError, ValueError):
    """The command or call cannot be carried out as given: an unknown choice, a bad value, a folder that cannot be
    written, a backend asked for that cannot start."""


class ImageError(VdsrError, ValueError):
    """An image that cannot be used; the message names the file (a path, or a URI) and the cause on one line."""

    def __init__(self, path: Path | str, cause: str) -> None:
        super().__init__(f"{path}: {cause}")
        self.path = path
        self.cause = cause


class ModelError(VdsrError, ValueError):
    """A weights file, ONNX graph or checkpoint that cannot be used; the message names the file."""


class DatasetError(VdsrError, ValueError):
    """A data set that cannot be used; `problems` lists every missing or mismatched file, the message (one line)
    the first five."""

    def __init__(self, summary: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        more = [f"and {len(self.problems) - 5} more"] if len(self.problems) > 5 else []
        super().__init__("; ".join([summary, *self.problems[:5], *more]))


class TrainingError(VdsrError, RuntimeError):
    """A training run that cannot start or go on (a checkpoint of another run, a non-finite loss, ...)."""


class BackendUnavailable(VdsrError):
    """This backend cannot run here (library, driver or GPU missing); the message says why."""


class BackendError(VdsrError, RuntimeError):
    """A backend failed while running (out of memory, a lost device, an engine error): the run stops, since every
    later image would fail the same way."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (a library's may run to many), or its type when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def exit_code(error: VdsrError) -> int:
    """The exit code the commands give for `error` (one table for all of them)."""
    if isinstance(error, UsageError | BackendUnavailable):
        return EXIT_USAGE
    if isinstance(error, BackendError):
        return EXIT_BACKEND
    return EXIT_FAILED
