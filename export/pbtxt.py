"""The part of protobuf's text format that Triton's config.pbtxt files are written in here, both ways: `render` a
message, and `parse` text strictly back into one, so a config can be checked to say what was meant before it is
served (a quote or a newline in a name would otherwise add fields or break the file).

A message is a dict of field name -> value; a value is a string ("..."), an integer, a Constant (an enum value
written bare: TYPE_FP32), a message ({ ... }), or a list of scalars (dims: [ 1, -1 ]) or of messages (input [ {...} ]).
Each field appears once. Strings hold no quote, backslash or line break: there is no escaping to get wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Union

from vdsr.errors import ModelError


@dataclass(frozen=True)
class Constant:
    """An enum value, written without quotes."""

    name: str


Value = Union[str, int, Constant, "Message", list["Value"]]
Message = dict[str, Value]

_TOKEN = re.compile(
    r'\s*(?:(?P<string>"[^"\\\n\r]*")|(?P<number>-?[0-9]+)|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<mark>[{}\[\]:,]))'
)


def render(message: Message) -> str:
    """The text of a top-level message: one field a line."""
    return "".join(f"{_field(key, value)}\n" for key, value in message.items())


def _field(key: str, value: Value) -> str:
    if isinstance(value, dict):
        return f"{key} {_message(value)}"
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return f"{key} [ {', '.join(_message(v) for v in value)} ]"  # type: ignore[arg-type]
    if isinstance(value, list):
        return f"{key}: [ {', '.join(_scalar(v) for v in value)} ]"
    return f"{key}: {_scalar(value)}"


def _message(message: Message) -> str:
    return f"{{ {''.join(f'{_field(k, v)} ' for k, v in message.items())}}}"


def _scalar(value: Value) -> str:
    if isinstance(value, Constant):
        return value.name
    if isinstance(value, str):
        return f'"{value}"'  # unescaped: parse() refuses the text if the string needed escaping
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"not a scalar: {value!r}")


def parse(text: str) -> Message:
    """The message `text` writes, in the subset render() writes; ValueError naming the first thing outside it."""
    return _fields(_tokens(text), end=None)


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text) pairs, reversed (the parser pops them); ValueError at the first character outside the subset."""
    tokens, at = [], 0
    while text[at:].strip():
        match = _TOKEN.match(text, at)
        if match is None:
            raise ValueError(f"unexpected {text[at:].lstrip()[:20]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        at = match.end()
    return tokens[::-1]


def _fields(tokens: list[tuple[str, str]], *, end: str | None) -> Message:
    message: Message = {}
    while tokens and tokens[-1] != ("mark", end):
        kind, key = tokens.pop()
        if kind != "word":
            raise ValueError(f"expected a field name, got {key!r}")
        if key in message:
            raise ValueError(f"field {key!r} given twice")
        if _next(tokens) == ("mark", "{"):
            message[key] = _submessage(tokens)
        elif _next(tokens) == ("mark", "["):
            message[key] = _list(tokens, _submessage)
        else:
            _expect(tokens, ":")
            message[key] = _list(tokens, _scalar_token) if _next(tokens) == ("mark", "[") else _scalar_token(tokens)
    if end is not None:
        _expect(tokens, end)
    return message


def _submessage(tokens: list[tuple[str, str]]) -> Message:
    _expect(tokens, "{")
    return _fields(tokens, end="}")


def _list(tokens: list[tuple[str, str]], item: Callable[[list[tuple[str, str]]], Value]) -> list[Value]:
    _expect(tokens, "[")
    values = [item(tokens)]
    while _next(tokens) == ("mark", ","):
        tokens.pop()
        values.append(item(tokens))
    _expect(tokens, "]")
    return values


def _scalar_token(tokens: list[tuple[str, str]]) -> Value:
    if not tokens:
        raise ValueError("the text ends where a value was expected")
    kind, text = tokens.pop()
    if kind == "string":
        return text[1:-1]
    if kind == "number":
        return int(text)
    if kind == "word":
        return Constant(text)
    raise ValueError(f"expected a value, got {text!r}")


def _next(tokens: list[tuple[str, str]]) -> tuple[str, str] | None:
    return tokens[-1] if tokens else None


def _expect(tokens: list[tuple[str, str]], mark: str) -> None:
    found = tokens.pop() if tokens else ("end", "the end of the text")
    if found != ("mark", mark):
        raise ValueError(f"expected {mark!r}, got {found[1]!r}")


def check_message(text: str, meant: Message, *, where: object) -> None:
    """ModelError naming `where` unless `text` parses back to exactly `meant`."""
    try:
        found = parse(text)
    except ValueError as error:
        raise ModelError(f"{where}: does not parse back ({error})") from error
    if found != meant:
        wrong = sorted(k for k in meant.keys() | found.keys() if meant.get(k) != found.get(k))
        raise ModelError(f"{where}: parses back to other fields than meant ({', '.join(wrong)})")
