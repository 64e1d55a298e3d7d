"""One time-zone story: stored and computed in UTC, shown in the facility's zone, named.

* :func:`local_text` writes a moment for people: ``2026-12-15 03:00 CET (Europe/Berlin)``.
  Domain messages (booking conflicts, deadlines) use it; the zone is the one set for
  the current request or command by :func:`use_display_zone` (UTC when none is set),
  so domain modules need no Flask and no configuration.
* :func:`resolve_local` turns a wall-clock time typed in the facility's zone into an
  aware UTC moment, refusing times that do not exist (the spring-forward gap) and
  asking which one is meant when a time happens twice (the fall-back hour).
* :func:`hours_between` is a duration in hours computed on UTC moments, so a booking
  across a clock change is charged its true length.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from portal.domain.errors import InvalidInput

_DISPLAY_ZONE: ContextVar[tzinfo] = ContextVar("cryofac_display_zone", default=UTC)

#: How an ambiguous wall-clock time (it happens twice) is to be read.
FOLD_CHOICES = ("first", "second")


def use_display_zone(zone: tzinfo) -> None:
    """Show times in ``zone`` for the rest of this request or command (context-local)."""
    _DISPLAY_ZONE.set(zone)


@contextmanager
def showing_zone(zone: tzinfo) -> Iterator[None]:
    """Show times in ``zone`` inside the ``with`` block only (a worker's jobs)."""
    token = _DISPLAY_ZONE.set(zone)
    try:
        yield
    finally:
        _DISPLAY_ZONE.reset(token)


def display_zone() -> tzinfo:
    return _DISPLAY_ZONE.get()


def zone_name(zone: tzinfo) -> str:
    return getattr(zone, "key", None) or str(zone)


def local_text(moment: datetime | None, zone: tzinfo | None = None, seconds: bool = False) -> str:
    """``moment`` in the display zone for people, e.g. ``2026-12-15 03:00 CET (Europe/Berlin)``."""
    if moment is None:
        return "—"
    zone = zone or display_zone()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # stored times are UTC
    local = moment.astimezone(zone)
    text = local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    abbreviation = local.tzname() or ""
    name = zone_name(zone)
    if abbreviation and abbreviation != name:
        return f"{text} {abbreviation} ({name})"
    return f"{text} {name}"


def facility_zone(config_dir: str | None, override: str | None = None) -> ZoneInfo:
    """``facility.timezone`` from facility.yaml in ``config_dir`` (embedded config if None);
    ``override`` (the ``FACILITY_TIMEZONE`` setting) wins when given."""
    from pathlib import Path

    from cryofac.config import load_facility
    from cryofac.errors import CryofacError

    if override:
        return ZoneInfo(override)
    path = Path(config_dir) / "facility.yaml" if config_dir else None
    try:
        return ZoneInfo(load_facility(path)["facility"].get("timezone", "UTC"))
    except (CryofacError, OSError, KeyError, ValueError):
        return ZoneInfo("UTC")


_ISO_MOMENT = re.compile(
    r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:[+-]\d{2}:\d{2}|Z)?"
)


def localise_times(text: str, zone: tzinfo | None = None) -> str:
    """``text`` with every ISO 8601 moment in it (``2026-12-15T02:00:00+00:00``; no offset:
    UTC) rewritten as :func:`local_text` writes it (to the minute), for texts composed elsewhere."""

    def _local(match: re.Match[str]) -> str:
        try:
            moment = datetime.fromisoformat(match.group(0).replace("Z", "+00:00"))
        except ValueError:
            return match.group(0)
        return local_text(moment, zone)

    return _ISO_MOMENT.sub(_local, text)


def hours_between(start: datetime, end: datetime) -> float:
    """Hours from ``start`` to ``end`` counted on UTC moments (true elapsed time)."""
    return (end.astimezone(UTC) - start.astimezone(UTC)).total_seconds() / 3600.0


def _exists(wall: datetime, zone: ZoneInfo) -> bool:
    aware = wall.replace(tzinfo=zone)
    return aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall


def _ambiguous(wall: datetime, zone: ZoneInfo) -> bool:
    first = wall.replace(tzinfo=zone, fold=0).utcoffset()
    second = wall.replace(tzinfo=zone, fold=1).utcoffset()
    return first != second


def resolve_local(value: str, zone: ZoneInfo, name: str, fold: str = "") -> datetime:
    """The aware UTC moment of ``value`` (ISO 8601) read in ``zone``.

    A value with an offset is taken as it is. A wall-clock value that does not exist
    in ``zone`` (clocks jumped over it) is refused; one that exists twice is refused
    unless ``fold`` is ``first`` (before the clocks went back) or ``second``.
    Raises :class:`InvalidInput` with a message that names the zone.
    """
    text = (value or "").strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{name}: {text[:40]!r} is not a date and time") from None
    try:
        return _resolve(parsed, zone, name, fold)
    except (OverflowError, ValueError):  # year 1 or 9999 moved across the date line
        raise InvalidInput(
            f"{name}: {text[:40]!r} is outside the dates this portal keeps"
        ) from None


def _resolve(parsed: datetime, zone: ZoneInfo, name: str, fold: str) -> datetime:
    if parsed.tzinfo is not None:
        return parsed.astimezone(UTC)
    wall = parsed.replace(fold=0)
    shown = wall.strftime("%Y-%m-%d %H:%M")
    zone_key = zone_name(zone)
    if not _exists(wall, zone):
        old, new = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
        jump = abs(new.utcoffset() - old.utcoffset()) // timedelta(minutes=1)
        raise InvalidInput(
            f"{name} {shown} does not exist in {zone_key}: the clocks jump forward by "
            f"{jump} minutes that night ({old.tzname()} to {new.tzname()}); "
            f"choose a time before or after the gap"
        )
    if _ambiguous(wall, zone):
        first = wall.replace(tzinfo=zone, fold=0)
        second = wall.replace(tzinfo=zone, fold=1)
        if fold not in FOLD_CHOICES:
            raise InvalidInput(
                f"{name} {shown} happens twice in {zone_key} (the clocks go back that night): "
                f"first at {first.strftime('%H:%M')} {first.tzname()}, then at "
                f"{second.strftime('%H:%M')} {second.tzname()}; say which one is meant"
            )
        return (first if fold == "first" else second).astimezone(UTC)
    return wall.replace(tzinfo=zone).astimezone(UTC)
