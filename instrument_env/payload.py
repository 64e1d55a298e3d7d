"""Readings payloads (HTTP bodies, MQTT messages) checked before they are parsed.

A body of a million readings, or 100 kB of ``[`` nested 50,000 deep, must be refused
without being parsed: :func:`parse_readings_payload` refuses a payload larger than
``max_bytes`` and one nested deeper than ``max_depth`` (counted on the raw bytes, with
strings skipped, in C-speed passes), then parses it. ASCII control characters inside
strings are left to per-reading validation (the reading is refused, not the batch).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from cryofac.errors import CryofacError

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class PayloadError(CryofacError):
    """A payload refused as a whole; ``code`` is ``too_large``, ``too_deep`` or ``invalid``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class PayloadLimits:
    """Limits of one readings payload: ``max_bytes`` (bytes), ``max_depth`` (nesting of
    arrays and objects; a reading with raw per-axis samples needs 5), ``max_readings``."""

    max_bytes: int = 32 * 1024 * 1024
    max_depth: int = 8
    max_readings: int = 50_000


def json_depth(body: bytes) -> int:
    """Deepest nesting of arrays/objects in JSON ``body`` (strings skipped), unparsed."""
    brackets = _STRINGS.sub(b'""', body).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1).astype(np.int64)
    return int(np.cumsum(steps).max())


def parse_readings_payload(body: bytes, limits: PayloadLimits = PayloadLimits()) -> Any:
    """The parsed payload (a list of readings, or one reading object) or PayloadError.

    Size and nesting are checked on the bytes first; the readings count after parsing
    (the size limit bounds the parse).
    """
    if len(body) > limits.max_bytes:
        raise PayloadError(
            "too_large", f"payload of {len(body)} bytes is larger than {limits.max_bytes} bytes"
        )
    depth = json_depth(body)
    if depth > limits.max_depth:
        raise PayloadError(
            "too_deep", f"JSON nested {depth} deep (at most {limits.max_depth} allowed)"
        )
    try:
        data = json.loads(body)
    except UnicodeDecodeError as exc:
        raise PayloadError("invalid", f"payload is not UTF-8 ({exc.reason})") from None
    except (ValueError, RecursionError) as exc:
        raise PayloadError("invalid", f"payload is not valid JSON ({exc})") from None
    if isinstance(data, list) and len(data) > limits.max_readings:
        raise PayloadError(
            "too_large",
            f"too many readings in one payload ({len(data)} > {limits.max_readings})",
        )
    return data
