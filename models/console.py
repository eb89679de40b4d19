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


def print_error(console: Console, error: Exception | str, label: str = "error") -> None:
    console.print(f"[red]{label}:[/red] {escape(str(error))}")  # file names may hold [brackets]


@contextmanager
def exit_on_errors(console: Console) -> Iterator[None]:
    """A VdsrError inside the block is printed as one error line and ends the command with its exit code."""
    try:
        yield
    except VdsrError as error:
        print_error(console, error)
        raise typer.Exit(exit_code(error)) from error
