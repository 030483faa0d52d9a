"""Go-identical wire encoding: ``json.Marshal`` bytes, floats, ``time.Time``, durations.

Ollama is a Go program; reproducing its encoder exactly lets tests compare
bytes (reference §0.2).
"""

from __future__ import annotations

import json
import re
import struct
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


class RawJSON:
    """Pre-encoded JSON text spliced verbatim into :func:`go_json` output."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def go_json(obj: Any) -> bytes:
    """Encode like Go's ``json.Marshal``: compact, ``<>&`` escaped, raw UTF-8.

    Dict order is kept (callers build dicts in Go struct field order);
    :class:`RawJSON` values are inserted as-is (used for Go float formatting).
    """
    raws: list[str] = []

    def splice(value: Any) -> str:
        if isinstance(value, RawJSON):
            raws.append(value.text)
            return f"\x00raw{len(raws) - 1}\x00"
        raise TypeError(f"cannot encode {type(value).__name__}")

    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=splice)
    text = (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )
    for index, raw in enumerate(raws):
        text = text.replace(f'"\\u0000raw{index}\\u0000"', raw, 1)
    return text.encode("utf-8")


_FLOAT32 = struct.Struct("<f")


def to_float32(value: float) -> float:
    return _FLOAT32.unpack(_FLOAT32.pack(value))[0]


def _shortest_float32_digits(value: float) -> str:
    target = to_float32(value)
    for precision in range(9):
        text = f"{target:.{precision}e}"
        if to_float32(float(text)) == target:
            return text
    return f"{target:.8e}"


def go_float(value: float, bits: int = 64) -> str:
    """Format a float the way Go's encoding/json does for float32/float64."""
    if value == 0:
        return "0"
    digits = _shortest_float32_digits(value) if bits == 32 else repr(value)
    number = Decimal(digits)
    magnitude = abs(value)
    if 1e-6 <= magnitude < 1e21:
        text = format(number, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text
    # Go writes 1e-07 then strips the exponent's leading zero: 1e-7.
    return format(number.normalize(), "e").replace("E", "e")


def go_float_list(values: Iterable[float], bits: int = 32) -> RawJSON:
    """A JSON array of Go-formatted floats."""
    return RawJSON("[" + ",".join(go_float(v, bits) for v in values) + "]")


_time_cache: dict[tuple[int, bool], tuple[str, str]] = {}


def go_time(ns: int | None = None, *, local: bool = False) -> str:
    """RFC 3339 with trimmed nanoseconds, like Go's ``time.Time`` JSON encoding.

    Response ``created_at`` is UTC (``Z``); file times use local time + offset.
    """
    if ns is None:
        ns = time.time_ns()
    seconds, fraction = divmod(ns, 1_000_000_000)
    cached = _time_cache.get((seconds, local))
    if cached is None:
        moment = datetime.fromtimestamp(seconds, UTC)
        if local:
            moment = moment.astimezone()
        offset = moment.utcoffset()
        zone = "Z"
        if offset:
            minutes = int(offset.total_seconds()) // 60
            sign = "+" if minutes >= 0 else "-"
            zone = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
        cached = (moment.strftime("%Y-%m-%dT%H:%M:%S"), zone)
        if len(_time_cache) > 4096:
            _time_cache.clear()
        _time_cache[(seconds, local)] = cached
    stamp, zone = cached
    frac = f".{fraction:09d}".rstrip("0") if fraction else ""
    return f"{stamp}{frac}{zone}"


_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)([a-zµμ]*)")


def parse_go_duration(text: str) -> float:
    """Parse a Go duration string (``"10m"``, ``"1h30m"``) into seconds."""
    body = text
    sign = 1.0
    if body[:1] in "+-" and body:
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    total = 0.0
    position = 0
    while position < len(body):
        match = _DURATION_PART.match(body, position)
        if not match:
            raise ValueError(f'time: invalid duration "{text}"')
        number, unit = match.groups()
        if not unit:
            raise ValueError(f'time: missing unit in duration "{text}"')
        if unit not in _DURATION_UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{text}"')
        total += float(number) * _DURATION_UNITS[unit]
        position = match.end()
    return sign * total
