"""Bounds on what a request may carry, checked at the edge (no Flask).

Every time, id, text and JSON document a request brings is checked here before it
reaches a query, so an out-of-range value is a 400 with a message rather than an
overflow deep inside (a year-9999 time shown in the facility's zone, an id beyond a
32-bit column, a NUL byte PostgreSQL cannot store, JSON nested thousands deep).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

from portal.domain.errors import InvalidInput


@dataclass(frozen=True)
class EdgeLimits:
    """Limits of request values. Times in UTC; ids are database integers (32-bit).

    ``latest`` leaves a margin below ``datetime.max`` so a time stored can be shown in
    any time zone; how far ahead a booking may really be is the facility's
    ``horizon_days`` rule (422), checked by the booking rules.
    """

    earliest: datetime = datetime(1970, 1, 1, tzinfo=UTC)
    latest: datetime = datetime(9999, 12, 1, tzinfo=UTC)
    max_id: int = 2**31 - 1
    max_json_depth: int = 64


LIMITS = EdgeLimits()
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = bytes(range(256)).translate(None, b"[]{}")


def bounded_time(value: datetime, name: str, limits: EdgeLimits = LIMITS) -> datetime:
    """``value`` (aware) in UTC, or :class:`InvalidInput` when outside the limits."""
    try:
        in_utc = value.astimezone(UTC)
    except (OverflowError, ValueError):
        in_utc = None
    if in_utc is None or not limits.earliest <= in_utc < limits.latest:
        raise InvalidInput(
            f"{name}: {value.isoformat()[:40]} is outside "
            f"{limits.earliest:%Y-%m-%d} to {limits.latest:%Y-%m-%d} (UTC)"
        )
    return in_utc


def bounded_date(value: date, name: str, limits: EdgeLimits = LIMITS) -> date:
    """``value``, or :class:`InvalidInput` when outside the limits' dates."""
    if not limits.earliest.date() <= value < limits.latest.date():
        raise InvalidInput(
            f"{name}: {value.isoformat()} is outside "
            f"{limits.earliest:%Y-%m-%d} to {limits.latest:%Y-%m-%d}"
        )
    return value


def bounded_id(value: object, name: str, limits: EdgeLimits = LIMITS) -> int:
    """A database id (1 to 2^31 − 1) from an int or a string of digits."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput(f"{name} must be an integer")
    text = value.strip() if isinstance(value, str) else None
    if text is not None and not (text.isascii() and text.lstrip("+-").isdigit() and len(text) < 20):
        raise InvalidInput(f"{name} must be an integer")
    number = int(text) if text is not None else value
    if not 1 <= number <= limits.max_id:
        raise InvalidInput(f"{name} must be between 1 and {limits.max_id}")
    return number


def has_nul(text: str) -> bool:
    return "\x00" in text


def json_depth(raw: bytes) -> int:
    """How deeply the JSON document ``raw`` nests arrays and objects (strings skipped),
    without parsing it."""
    brackets = _STRING.sub(b"", raw).translate(None, _BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def check_json(raw: bytes, limits: EdgeLimits = LIMITS) -> None:
    """:class:`InvalidInput` for a JSON body nested too deep or holding a NUL character."""
    if b"\x00" in raw or b"\\u0000" in raw:
        raise InvalidInput("the request body holds a NUL character")
    depth = json_depth(raw)
    if depth > limits.max_json_depth:
        raise InvalidInput(
            f"the JSON body nests {depth} levels deep; at most {limits.max_json_depth} allowed"
        )
