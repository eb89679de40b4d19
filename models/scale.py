"""The one home of the upscaling factor: what a valid scale is, checked once where a scale comes in (the API, the
commands, the bench, the trainer) and trusted after that.

Two rules: the runtime takes any real 1 < s <= 8 (2.37 works); the bench and the trainer take integers (the paper's
protocol) and multiples of 1/4 between them (1.5, 2.5: exact in binary, so every size they give is exact).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

from vdsr.errors import UsageError

MAX_SCALE = 8


def check_scale(scale: object) -> float:
    """A scale the runtime takes, as a float; UsageError naming it otherwise."""
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise UsageError(
            f"Expected a scale, a real number with 1 < scale <= {MAX_SCALE:g}, got {type(scale).__name__} {scale!r:.40}"
        )
    try:
        number = float(scale)
    except OverflowError:  # an int too large for a float (10**400)
        number = math.inf
    if not 1 < number <= MAX_SCALE:
        shown = f"{scale!s:.40}" if number != math.inf or not isinstance(scale, int) else "a very large integer"
        raise UsageError(f"Expected a scale with 1 < scale <= {MAX_SCALE:g}, got {shown}")  # NaN fails the range
    return number


def is_quarter_scale(value: object) -> bool:
    """Whether `value` is a scale the bench and the trainer take: 1 < s <= 8, a multiple of 1/4."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    number = float(value)
    return math.isfinite(number) and 1 < number <= MAX_SCALE and (number * 4).is_integer()


def parse_scales(values: Iterable[str], *, option: str = "--scale") -> list[float]:
    """'2,3,4' or repeated --scale values -> [2, 3, 4], each a quarter scale (see is_quarter_scale), duplicates
    dropped. Integer values stay ints (2, not 2.0) in results."""
    scales: list[float] = []
    for value in values:
        for part in value.split(","):
            try:
                number = float(part.strip())
            except ValueError:
                number = 0.0
            if not is_quarter_scale(number):
                raise UsageError(
                    f"{option}: a scale is a number in 1 < s <= {MAX_SCALE}, an integer (the paper's protocol) or a "
                    f"multiple of 0.25 (1.5, 2.5), got {part.strip()!r}"
                )
            scale = int(number) if number.is_integer() else number
            if scale not in scales:
                scales.append(scale)
    return scales


def scale_label(scale: float) -> str:
    """2 -> '2', 2.5 -> '2.5': the suffix of default output names (photo_x2.png, photos_x2.5/)."""
    number = float(scale)
    return str(int(number)) if number.is_integer() else repr(number)  # all its digits: two scales never share a name
