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

Rows are independent: a row that is not UTF-8 (e.g. one Latin-1 row in a UTF-8 export)
or that the CSV reader cannot split is refused with its line and reason, and every
other row is still read. :func:`import_csv` stores a file in batches and returns a
:class:`CsvSummary` (accepted, rejected, counts per reason kind, first reasons).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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


#: Undecodable bytes, as the ``surrogateescape`` error handler keeps them.
_UNDECODABLE = re.compile("[\udc80-\udcff]")


class RowError(str):
    """A row refused before ingest (not UTF-8, not splittable): the reason; ``item``:
    the row as read (its line and raw text, bytes that are not UTF-8 as ``\\xNN``), kept
    in env_rejected_readings with the reason."""

    item: dict

    @classmethod
    def of(cls, reason: str, line: int, cells: list[str]) -> RowError:
        error = cls(reason)
        raw = ",".join(cells).encode("utf-8", "surrogateescape")
        error.item = {"line": line, "raw": raw.decode("utf-8", "backslashreplace")[:2000]}
        return error


def _rows(reader) -> Iterator[tuple[int, list[str] | RowError]]:
    """(line, cells) per row; a row the reader cannot split is a :class:`RowError`."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, RowError.of(f"not a CSV row ({exc})", reader.line_num, [])
            continue
        bad = next((cell for cell in row if _UNDECODABLE.search(cell)), None)
        if bad is not None:
            raw = bad.encode("utf-8", "surrogateescape")
            error = RowError.of(f"not UTF-8 ({raw[:40]!r})", reader.line_num, row)
            yield reader.line_num, error
            continue
        yield reader.line_num, row


def read_csv_readings(
    handle: IO[str], config: EnvConfig, *, timezone: str | None = None
) -> Iterator[tuple[str, dict | RowError]]:
    """Yield ``(where, reading)``; ``where`` names the line (and column) for messages.

    A row refused before ingest yields a :class:`RowError` (its reason) instead of a
    reading. Open the file with ``errors="surrogateescape"`` so that undecodable rows
    are refused one by one (:func:`import_csv` does).
    """
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
    except csv.Error as exc:
        raise MalformedCSV(f"header is not a CSV row ({exc})") from None
    if any(_UNDECODABLE.search(h) for h in header):
        raise MalformedCSV("header is not UTF-8")
    if set(LONG_COLUMNS) <= set(header):
        index = {name: header.index(name) for name in (*LONG_COLUMNS, "band") if name in header}
        for line, row in _rows(reader):
            if isinstance(row, RowError):
                for key in ("sensor", "quantity", "ts"):  # for the kept row, when readable
                    cells = row.item["raw"].split(",")
                    if index[key] < len(cells):
                        row.item[key] = cells[index[key]].strip()
                yield f"line {line}", row
                continue
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
    for line, row in _rows(reader):
        if isinstance(row, RowError):
            yield f"line {line}", row
            continue
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


@dataclass
class CsvSummary:
    """What became of one CSV file: readings ``accepted`` and ``rejected``, rejected
    readings per reason kind (``invalid``, ``implausible``, ``conflict``, ``clock``,
    ``row``: not UTF-8 or not a CSV row), and ``(where, reason)`` of each refusal."""

    accepted: int = 0
    rejected: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    reasons: list[tuple[str, str]] = field(default_factory=list)

    def add(self, where: str, reason: str, kind: str) -> None:
        self.rejected += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        self.reasons.append((where, reason))

    def line(self, name: str) -> str:
        """``name: N readings accepted, M rejected (kind k, ...)``."""
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.by_kind.items()))
        return f"{name}: {self.accepted} readings accepted, {self.rejected} rejected" + (
            f" ({kinds})" if kinds else ""
        )


def import_csv(
    handle: IO[str],
    sessionmaker: Callable,
    config: EnvConfig,
    *,
    source: str = "csv",
    timezone: str | None = None,
    batch_size: int = 5000,
) -> CsvSummary:
    """Read and store a logger's CSV export, ``batch_size`` readings per transaction.

    Rows are independent: refused rows and readings are counted with their reason,
    the others stored. Raises :class:`MalformedCSV` only for a header matching neither
    layout (nothing is read then).
    """
    import itertools

    from instrument_env.ingest import ingest_readings, keep_refused

    summary = CsvSummary()
    items = read_csv_readings(handle, config, timezone=timezone)
    while True:
        chunk = list(itertools.islice(items, batch_size))
        if not chunk:
            return summary
        readings, refused = [], []
        for where, reading in chunk:
            if isinstance(reading, RowError):
                summary.add(where, str(reading), "row")
                refused.append((reading.item, f"{where}: {reading}"))
            else:
                readings.append((where, reading))
        with sessionmaker() as session:  # the refused rows are kept with their reason
            keep_refused(session, refused, source=source)
            result = ingest_readings(
                session, [r for _, r in readings], source=source, config=config
            )
            session.commit()
        summary.accepted += result.accepted
        for entry in result.rejected:
            summary.add(readings[entry["index"]][0], entry["reason"], entry["kind"])
