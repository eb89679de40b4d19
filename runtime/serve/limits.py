"""The service's rules for one request, apart from Ray: what a request may ask (scale, model, format), the limits it
is held to, and how each answer is made (status, headers, one line of cause). Pure functions, so the rules are
tested without starting a server."""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from PIL import Image

from vdsr.errors import BackendError, ImageError, UsageError, VdsrError
from vdsr.runtime.images import FORMAT_SUFFIXES, READ_FORMATS
from vdsr.runtime.resize import output_shape_for
from vdsr.runtime.tiling import network_pixels
from vdsr.scale import check_scale

MIB = 1 << 20
# A service holds every admitted request's image at once, so its limits are lower than vdsr-run's: 8 MP in and
# 32 MP out keep one request under about 0.5 GiB (float32 planes of the result), 16 of them under 8 GiB.
DEFAULT_MAX_BODY = 64 * MIB
DEFAULT_MAX_PIXELS = 8_000_000
DEFAULT_MAX_OUTPUT_PIXELS = 32_000_000
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_QUEUE = 16  # requests a replica holds at once (running or waiting for the backend); more get 503
RETRY_AFTER_S = 1  # what a 503 asks the client to wait: about one image's time on a CPU
QUERY_KEYS = ("scale", "model", "format")
MAX_LINE = 300  # characters of an answer's one line: a value echoed from the query is cut there
CONTENT_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "TGA": "image/x-tga",
    "BMP": "image/bmp",
    "PPM": "image/x-portable-anymap",
}
assert set(CONTENT_TYPES) == set(FORMAT_SUFFIXES.values()), "every output format has its content type"


@dataclass(frozen=True)
class Limits:
    """What one replica accepts: body bytes, input and output pixels, seconds per request, requests at once."""

    max_body: int = DEFAULT_MAX_BODY
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_queue: int = DEFAULT_MAX_QUEUE

    def __post_init__(self) -> None:
        for name in ("max_body", "max_pixels", "max_output_pixels", "max_queue"):
            if getattr(self, name) < 1:
                raise UsageError(f"Expected {name} >= 1, got {getattr(self, name)}")
        if not self.timeout_s > 0:
            raise UsageError(f"Expected a timeout > 0 seconds, got {self.timeout_s}")


@dataclass(frozen=True)
class Ask:
    """What a POST /upscale asks: the scale, the model (one the server was started with), the output format (PIL's
    name; None: the input's, PNG for a GIF)."""

    scale: float
    model: str
    fmt: str | None


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, body, its content type and extra headers."""

    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


def parse_ask(pairs: Sequence[tuple[str, str]], models: Sequence[str]) -> Ask:
    """The query of POST /upscale, its (key, value) pairs in order (`scale` required; `model`, `format` optional);
    UsageError naming what is wrong. A key not known, or given twice, is refused rather than ignored or resolved:
    a misspelt `fromat=png` would otherwise answer in another format."""
    query: dict[str, str] = {}
    for key, value in pairs:
        if key not in QUERY_KEYS:
            raise UsageError(f"unknown query parameter {key!r} (known: {', '.join(QUERY_KEYS)})")
        if key in query:
            raise UsageError(f"query parameter {key!r} given twice")
        query[key] = value
    if "scale" not in query:
        raise UsageError("the query needs scale, e.g. POST /upscale?scale=2")
    try:  # ASCII digits only (float() takes any script's), then the range
        if not re.fullmatch(r"[0-9.eE+-]+", query["scale"]):
            raise ValueError("not a number")
        scale = check_scale(float(query["scale"]))
    except ValueError as error:  # UsageError is one too
        raise UsageError(f"Expected a scale with 1 < scale <= 8, got {query['scale']!r}") from error
    model = query.get("model", models[0])
    if model not in models:
        raise UsageError(f"model {model!r} is not served here (served: {', '.join(models)})")
    fmt = query.get("format")
    if fmt is not None and fmt.lower() not in FORMAT_SUFFIXES:
        raise UsageError(f"format {fmt!r} is not one written here ({', '.join(FORMAT_SUFFIXES)})")
    return Ask(scale, model, None if fmt is None else FORMAT_SUFFIXES[fmt.lower()])


def body_length(header: str | None, max_body: int) -> Reply | None:
    """A refusal from the Content-Length header alone (checked before any byte of the body is read), or None."""
    if header is None:
        return None
    if not header.strip().isdigit():
        return text(400, f"Content-Length {header!r} is not a number of bytes")
    if int(header) > max_body:
        return too_large(max_body)
    return None


def too_large(max_body: int) -> Reply:
    return text(413, f"the body is over the limit of {max_body} bytes")


def busy(held: int, *, retry_after: float = RETRY_AFTER_S) -> Reply:
    """503 with Retry-After: the replica holds `held` requests, as many as it takes (or as many as it can finish
    within the timeout); answered at once, never queued."""
    seconds = max(RETRY_AFTER_S, math.ceil(retry_after))
    reply = text(503, f"busy: {held} requests in progress; retry after {seconds} s")
    return Reply(reply.status, reply.body, reply.content_type, (("Retry-After", str(seconds)),))


@dataclass(eq=False)  # one per request, told apart by identity
class Work:
    """A request's network work in window pixels (the network's input pixels, which its cost goes by): planned from
    its image's header before it is admitted, done as its windows run."""

    model: str
    planned: int
    done: int = 0


@dataclass
class Pace:
    """How fast a replica's backend runs one model: seconds per window pixel, first timed when the replica starts
    (vdsr.runtime.serve.work.time_backend), then on every call: the ratio of moving sums of seconds and of pixels,
    so a call counts by its size (a tiny window's fixed cost does not set the pace of large ones)."""

    seconds: float
    pixels: float

    @property
    def seconds_per_pixel(self) -> float:
        return self.seconds / self.pixels

    def measured(self, seconds: float, pixels: int) -> None:
        if pixels > 0:
            self.seconds, self.pixels = 0.7 * self.seconds + 0.3 * seconds, 0.7 * self.pixels + 0.3 * pixels


def expected_wait(works: Iterable[Work], paces: Mapping[str, Pace]) -> float:
    """Seconds until the window pixels `works` have left would all be run, each at its model's pace. A replica
    refuses (503) a request whose work, with what the admitted ones have left, would take longer than its timeout,
    rather than admit a burst of large images that then share the backend and all end in 504 after the work was spent
    (what admission by the average request did: 20 concurrent 300x300 images at a 20 s timeout, measured)."""
    return sum(max(0, work.planned - work.done) * paces[work.model].seconds_per_pixel for work in works)


def planned_pixels(body: bytes, scale: float, *, tile: int, halo: int, limits: Limits) -> int:
    """The window pixels the network will run for the image in `body` at `scale`, read from its header (tile and
    halo: the replica's); 0 for a body that is not an image read here or is over a pixel limit: the pipeline refuses
    it before any work, and says why."""
    try:
        with Image.open(io.BytesIO(body), formats=READ_FORMATS) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001  (whatever a decoder raises on a bad header: the pipeline names it)
        return 0
    if width * height > limits.max_pixels:
        return 0
    shape = output_shape_for((height, width), scale)
    return network_pixels(shape, tile, halo) if shape[0] * shape[1] <= limits.max_output_pixels else 0


def timed_out(seconds: float) -> Reply:
    return text(504, f"the upscale took over the limit of {seconds:g} s")


def refusal(error: VdsrError) -> Reply:
    """The answer to an error the pipeline raised on purpose: a bad request (400), an image that cannot be used
    (422: undecodable, over a pixel limit, a format that cannot hold it), a failing backend (500)."""
    if isinstance(error, UsageError):
        return text(400, str(error))
    if isinstance(error, ImageError):
        return text(422, str(error))
    if isinstance(error, BackendError):
        return text(500, f"backend failure: {error}")
    return text(500, str(error))


def text(status: int, message: str) -> Reply:
    """One line of plain text: control characters (from a name or a decoder's message) written as escapes."""
    first = message.strip().splitlines()[0] if message.strip() else "error"
    line = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in first)
    line = line if len(line) <= MAX_LINE else line[: MAX_LINE - 3] + "..."
    return Reply(status, (line + "\n").encode(), "text/plain; charset=utf-8")


def as_json(status: int, document: object) -> Reply:
    return Reply(status, json.dumps(document).encode(), "application/json")
