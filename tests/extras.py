"""A command run as after an install without some extras: their modules made unimportable in the child process."""

from __future__ import annotations


def without(modules: tuple[str, ...], *, module: str, prog: str) -> str:
    """The program (for `python -c`) that runs `module`'s typer app as `prog` with `modules` unimportable."""
    return "\n".join(
        [
            "import sys",
            *(f"sys.modules[{name!r}] = None" for name in modules),
            f"sys.argv[0] = {prog!r}",
            f"from {module} import app",
            "app()",
        ]
    )
