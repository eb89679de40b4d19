"""A benchmark run's scores as they come, one JSON line per image and scale and method, after a header line that
describes the run (data sets, scales, methods, weights): an interrupted run keeps what it scored, and `--resume`
continues it, scoring only what is missing. A line cut short by a kill is dropped; a file of another run is refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, fields
from pathlib import Path
from typing import TextIO

from vdsr.bench.harness import ImageKey, ImageResult, image_key
from vdsr.errors import UsageError

_FIELDS = {f.name for f in fields(ImageResult)}


def open_jsonl(path: Path, plan: dict[str, object]) -> TextIO:
    """The log to append to; a new one starts with the plan of this run. A line a kill cut short is cut off first
    (read_jsonl has dropped it), so the next record starts on a line of its own."""
    path.parent.mkdir(parents=True, exist_ok=True)  # as --json and the other reports make theirs
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        data = path.read_bytes()
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
    log = path.open("a", encoding="utf-8")
    if new:
        log.write(json.dumps({"plan": plan}) + "\n")
        log.flush()
    return log


def append_jsonl(log: TextIO | None, result: ImageResult) -> None:
    if log is None:
        return
    record = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in asdict(result).items()}
    log.write(json.dumps(record) + "\n")
    log.flush()  # a kill loses at most the line being written


def read_jsonl(path: Path, plan: dict[str, object]) -> dict[ImageKey, ImageResult]:
    """The scores an interrupted run of the same plan recorded. UsageError for another run's file or a damaged one."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--resume: cannot read {path} ({error})") from error
    if lines == [""]:
        return {}  # an empty file: nothing scored yet
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("plan") != json.loads(json.dumps(plan)):
        raise UsageError(
            f"--resume: {path} records another bench (data sets or their images, scales, methods or weights differ), "
            "or is not a vdsr-bench --jsonl file"
        )
    done: dict[ImageKey, ImageResult] = {}
    last = len(lines) - 1
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or set(record) != _FIELDS:
                raise ValueError("not an image score")
            if record["psnr"] is None:
                record["psnr"] = math.inf  # an exact reconstruction
            _check_types(record)
            result = ImageResult(**record)
        except (ValueError, TypeError) as error:
            if number - 1 == last:  # the line a kill cut short: scored again
                continue
            raise UsageError(f"--resume: {path}, line {number}: {error}") from error
        done[image_key(result)] = result
    return done


def _check_types(record: dict[str, object]) -> None:
    """ValueError unless every field has its type: a damaged or edited file must not reach the averages."""
    for name in ("dataset", "method", "image"):
        if not isinstance(record[name], str):
            raise ValueError(f"{name} is {record[name]!r}, not text")
    for name in ("height", "width"):
        if not isinstance(record[name], int) or isinstance(record[name], bool):
            raise ValueError(f"{name} is {record[name]!r}, not an integer")
    for name in ("scale", "psnr", "ssim", "seconds"):
        if not isinstance(record[name], (int, float)) or isinstance(record[name], bool):
            raise ValueError(f"{name} is {record[name]!r}, not a number")
