"""What every command shares: errors printed as one line on stderr, and exit codes from one table
(vdsr.errors.exit_code)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from vdsr.errors import VdsrError, exit_code


def error_console() -> Console:
    """stderr, no highlighting, lines never wrapped: a message or file name reads the same at any terminal width."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def safe(text: object) -> str:
    """`text` as it can be shown on a terminal: control characters (a file name can hold escape sequences and
    newlines) written as Python escapes, rich markup ([brackets] in names) escaped."""
    return escape("".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text)))


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
