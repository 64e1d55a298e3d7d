"""Screening and parsing of one MQTT message of readings, limits applied before parsing.

Topic ``cryofac/env/ROOM/SENSOR``; payload JSON, one reading
``{"quantity", "ts", "value", "unit"[, "band"]}`` or a list of them (CONTRACT.md).

A payload is refused whole (:class:`MalformedMessage`, with the reason) when its topic is
not a configured sensor's, when it is larger than :attr:`PayloadLimits.max_bytes`, nested
deeper than :attr:`PayloadLimits.max_depth` (both checked on the raw bytes, before the
JSON parser sees them), not UTF-8, not JSON, or not an object or a list of objects.
Within a well-formed payload each reading stands alone: one whose strings hold control
characters (``\\u0000`` ...) is refused at this edge, the others go on to
:func:`instrument_env.ingest.ingest_readings`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np

from instrument_env.limits import EnvConfig

TOPIC_PREFIX = "cryofac/env"


class MalformedMessage(ValueError):
    """An MQTT message that cannot be turned into readings (logged, acknowledged, skipped)."""


@dataclass(frozen=True)
class PayloadLimits:
    """Limits applied to an MQTT payload before it is parsed.

    ``max_bytes``: largest payload accepted, in bytes (1 MiB holds ~10,000 readings, or
    a 10 s block of raw 1 kHz three-axis magnetometer samples).
    ``max_depth``: deepest nesting of JSON arrays and objects accepted (a list of
    readings with raw samples per axis needs 5).
    """

    max_bytes: int = 1 << 20
    max_depth: int = 8

    def __post_init__(self) -> None:
        if self.max_bytes < 2 or self.max_depth < 2:
            raise ValueError("max_bytes and max_depth must be at least 2")


@dataclass
class ParsedMessage:
    """Readings of one message (``sensor`` filled in from the topic) and the readings
    refused at the edge as ``(position in the payload, reason)``."""

    sensor: str
    readings: list[dict]
    refused: list[tuple[int, str]]
    #: the refused readings as received (``sensor`` from the topic), to be kept
    refused_items: list[dict] = field(default_factory=list)


def topic_for(room: str, sensor: str) -> str:
    return f"{TOPIC_PREFIX}/{room}/{sensor}"


#: +1 for an opening bracket, -1 for a closing one, 0 for any other byte.
_STEP = np.zeros(256, np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1
_QUOTE = ord('"')
#: A JSON escape of a C0 control character or DEL (raw ones are invalid JSON already).
_ESCAPED_CONTROL = re.compile(r"\\u00[01][0-9a-fA-F]|\\u007[fF]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def json_depth(payload: bytes) -> int:
    """Deepest nesting of arrays and objects in ``payload``, counted without parsing.

    Brackets inside strings do not count (escaped backslashes and quotes are removed
    first, then every byte after an odd number of quotes is inside a string). Linear
    in the size of the payload, vectorised (about as fast as ``json.loads`` itself,
    whatever the nesting). Exact for valid JSON; for invalid JSON it is a count the
    parser then refuses anyway.
    """
    clean = payload.replace(b"\\\\", b"").replace(b'\\"', b"")
    if not clean:
        return 0
    data = np.frombuffer(clean, np.uint8)
    outside = (np.cumsum(data == _QUOTE) & 1) == 0
    return max(int(np.cumsum(_STEP[data] * outside, dtype=np.int64).max()), 0)


def parse_message(
    topic: str | bytes,
    payload: bytes,
    config: EnvConfig,
    limits: PayloadLimits = PayloadLimits(),
) -> ParsedMessage:
    """The readings of one MQTT message, or :class:`MalformedMessage` saying why not."""
    if isinstance(topic, bytes):
        try:
            topic = topic.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedMessage(f"topic {topic[:80]!r} is not UTF-8") from None
    parts = topic.split("/")
    if len(parts) != 4 or "/".join(parts[:2]) != TOPIC_PREFIX:
        raise MalformedMessage(f"topic {topic[:200]!r} is not {TOPIC_PREFIX}/ROOM/SENSOR")
    room, sensor_id = parts[2], parts[3]
    sensor = config.sensors.get(sensor_id)
    if sensor is None:
        raise MalformedMessage(f"topic {topic!r}: unknown sensor {sensor_id!r}")
    if sensor.room != room:
        raise MalformedMessage(f"topic {topic!r}: sensor {sensor_id!r} is in room {sensor.room!r}")
    if len(payload) > limits.max_bytes:
        raise MalformedMessage(
            f"topic {topic!r}: payload of {len(payload)} bytes is over the limit of "
            f"{limits.max_bytes} bytes"
        )
    depth = json_depth(payload)
    if depth > limits.max_depth:
        raise MalformedMessage(
            f"topic {topic!r}: payload nested {depth} deep (limit {limits.max_depth})"
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedMessage(
            f"topic {topic!r}: payload is not UTF-8 (byte 0x{payload[exc.start]:02x} "
            f"at offset {exc.start})"
        ) from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise MalformedMessage(f"topic {topic!r}: payload is not JSON ({detail})") from None
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(item, dict) for item in items):
        raise MalformedMessage(f"topic {topic!r}: payload must be an object or a list of objects")
    check_controls = "\\u00" in text and _ESCAPED_CONTROL.search(text) is not None
    readings, refused, refused_items = [], [], []
    for position, item in enumerate(items):
        if check_controls:
            reason = _control_characters(item)
            if reason is not None:
                refused.append((position, reason))
                refused_items.append({**item, "sensor": sensor_id})
                continue
        item["sensor"] = sensor_id  # the topic names the sensor (a fresh dict: no copy)
        readings.append(item)
    return ParsedMessage(sensor_id, readings, refused, refused_items)


def _control_characters(item: dict) -> str | None:
    """Why a reading is refused for control characters in its keys or strings, or None."""
    for key, value in item.items():
        if _CONTROL.search(key):
            return f"key {key[:40]!r} contains control characters"
        if isinstance(value, str) and _CONTROL.search(value):
            return f"{key} {value[:40]!r} contains control characters"
    return None
