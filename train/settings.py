"""How a training setting is declared (vdsr.train.config declares each once): its help, the rule its value keeps,
its option on vdsr-train, how the option's text becomes the value. The validation, the command line and the model
card are derived from the declarations."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vdsr.bench.protocol import parse_degradation
from vdsr.errors import UsageError
from vdsr.scale import is_quarter_scale

Rule = Callable[[Any], str | None]  # a value -> what is wrong with it, or None


@dataclass(frozen=True)
class Setting:
    """A setting's declaration: help, the rule its value keeps, and its option on vdsr-train (None: a recipe's
    alone). `parse` turns the option's text into the value ("30-95" -> (30, 95)); `resumable`: the only settings a
    resumed run may change (the arithmetic or where it stops, not what is learnt)."""

    help: str
    rule: Rule
    option: str | None = None
    parse: Callable[[Any], Any] | None = None
    repeatable: bool = False
    resumable: bool = False
    choices: tuple[str, ...] = ()


def setting(default: Any, help: str, rule: Rule | tuple[str, ...], *option: str, **more: Any) -> Any:
    """A TrainConfig field declared with its Setting (its option on vdsr-train, if it has one); a tuple of choices as
    the rule: the value is one of them."""
    factory = {"default_factory": default} if callable(default) else {"default": default}
    if isinstance(rule, tuple):
        more["choices"], rule = rule, choice(*rule)
    return field(metadata={"setting": Setting(help, rule, option[0] if option else None, **more)}, **factory)


def count(least: int, *, optional: bool = False) -> Rule:
    def rule(v: Any) -> str | None:
        if optional and v is None:
            return None
        return None if isinstance(v, int) and not isinstance(v, bool) and v >= least else f"not an integer >= {least}"

    return rule


def amount(*, positive: bool, optional: bool = False, below: float | None = None) -> Rule:
    def rule(v: Any) -> str | None:
        if optional and v is None:
            return None
        number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        fits = number and (v > 0 if positive else v >= 0) and (below is None or v < below)
        bound = f" and < {below:g}" if below is not None else ""
        return None if fits else f"not a number {'>' if positive else '>='} 0{bound}"

    return rule


def probability(v: Any) -> str | None:
    return None if is_number(v, whole=False) and 0 <= v <= 1 else "not a probability"


def choice(*choices: str) -> Rule:
    return lambda v: None if v in choices else f"not one of {', '.join(choices)}"


def flag(v: Any) -> str | None:
    return None if isinstance(v, bool) else "not true or false"


def within(low: float, high: float, *, whole: bool) -> Rule:
    def rule(v: Any) -> str | None:
        ok = isinstance(v, tuple) and len(v) == 2 and all(is_number(x, whole) for x in v) and low <= v[0] <= v[1]
        return None if ok and v[1] <= high else f"not a range (low, high) within {low:g}..{high:g}"

    return rule


def scale_list(*, empty: bool) -> Rule:
    def rule(v: Any) -> str | None:
        ok = isinstance(v, tuple) and (v or empty) and all(map(is_quarter_scale, v))
        return None if ok else "not scales 1 < s <= 8 in steps of 0.25"

    return rule


def degradation_names(v: Any) -> str | None:
    ok = isinstance(v, tuple) and v and all(isinstance(n, str) and is_degradation(n) for n in v)
    return None if ok else "not names as vdsr-bench's --degradation takes"


def is_number(value: object, whole: bool) -> bool:
    integer = isinstance(value, int) and not isinstance(value, bool)
    return integer or (not whole and isinstance(value, float) and math.isfinite(value))


def is_degradation(name: str) -> bool:
    try:
        parse_degradation(name)
    except UsageError:
        return False
    return True


def optional_text(v: Any) -> str | None:
    return None if v is None or isinstance(v, str) else "not a weights file's name and hash"


def mapping(v: Any) -> str | None:
    return None if isinstance(v, dict) else "not a JSON object"


def parse_range(text: str, option: str, *, whole: bool) -> tuple[float, float]:
    """'30-95' -> (30, 95); '5' -> (5, 5). UsageError naming the option otherwise."""
    low, _, high = text.partition("-")
    try:
        pair = tuple(int(v) if whole else float(v) for v in (low, high or low))
    except ValueError:
        raise UsageError(f"{option}: expected a range LOW-HIGH, got {text!r}") from None
    return pair  # type: ignore[return-value]
