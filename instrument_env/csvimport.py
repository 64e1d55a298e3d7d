"""Readings from a logger's CSV export, in either of two layouts.

- **long**: one reading per row, columns ``sensor,quantity,ts,value,unit[,band]``
  (the CONTRACT reading fields).
- **wide**: one row per time, a time column (``ts``, ``timestamp`` or ``time``) and one
  column per channel named ``SENSOR/QUANTITY`` or ``SENSOR/QUANTITY/BAND`` (how
  monitoring systems such as Vaisala viewLinc export several channels); the unit is the
  quantity's canonical unit from limits.yaml; empty cells are skipped.

Logger clocks often export local time without an offset: ``timezone`` (an IANA name,
e.g. the facility's ``Asia/Shanghai``) is then applied to times that have none. Times
without an offset and without ``timezone`` are rejected by ingest with a reason.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import datetime
from typing import IO

from cryofac.errors import CryofacError
from instrument_env.limits import EnvConfig

LONG_COLUMNS = ("sensor", "quantity", "ts", "value", "unit")
TIME_COLUMNS = ("ts", "timestamp", "time")


class MalformedCSV(CryofacError):
    """The CSV header matches neither layout."""


def _value(text: str):
    try:
        return float(text)
    except ValueError:
        return text  # rejected with a reason by ingest


def _localize(ts: str, tz) -> str:
    if tz is None:
        return ts
    try:
        parsed = datetime.fromisoformat(ts)
    except ValueError:
        return ts  # rejected with a reason by ingest
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=tz).isoformat()
    return ts


def read_csv_readings(
    handle: IO[str], config: EnvConfig, *, timezone: str | None = None
) -> Iterator[tuple[str, dict]]:
    """Yield ``(where, reading)``; ``where`` names the line (and column) for messages."""
    tz = None
    if timezone:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise MalformedCSV(f"unknown time zone {timezone!r}") from None
    reader = csv.reader(handle)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise MalformedCSV("empty file (no header)") from None
    if set(LONG_COLUMNS) <= set(header):
        index = {name: header.index(name) for name in (*LONG_COLUMNS, "band") if name in header}
        for line, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            cells = {k: (row[i].strip() if i < len(row) else "") for k, i in index.items()}
            reading = {
                "sensor": cells["sensor"],
                "quantity": cells["quantity"],
                "ts": _localize(cells["ts"], tz),
                "value": _value(cells["value"]),
                "unit": cells["unit"],
            }
            if cells.get("band"):
                reading["band"] = cells["band"]
            yield f"line {line}", reading
        return
    time_column = next((i for i, h in enumerate(header) if h.lower() in TIME_COLUMNS), None)
    if time_column is None:
        raise MalformedCSV(
            f"header matches neither layout: expected columns {','.join(LONG_COLUMNS)}[,band] "
            f"or a time column ({'/'.join(TIME_COLUMNS)}) and SENSOR/QUANTITY columns"
        )
    channels = {}
    for i, name in enumerate(header):
        if i == time_column:
            continue
        parts = name.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise MalformedCSV(f"column {name!r} is not SENSOR/QUANTITY[/BAND]")
        sensor, quantity = parts[0], parts[1]
        if sensor not in config.sensors:
            raise MalformedCSV(f"column {name!r}: unknown sensor {sensor!r}")
        if quantity not in config.units:
            raise MalformedCSV(f"column {name!r}: no unit known for {quantity!r}")
        channels[i] = (name, sensor, quantity, parts[2] if len(parts) == 3 else None)
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        ts = _localize(row[time_column].strip(), tz) if time_column < len(row) else ""
        for i, (name, sensor, quantity, band) in channels.items():
            cell = row[i].strip() if i < len(row) else ""
            if not cell:
                continue
            reading = {
                "sensor": sensor,
                "quantity": quantity,
                "ts": ts,
                "value": _value(cell),
                "unit": config.units[quantity],
            }
            if band is not None:
                reading["band"] = band
            yield f"line {line}, column {name}", reading
