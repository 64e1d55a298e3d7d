"""iCalendar (RFC 5545) feeds of bookings, per user and per instrument.

Written by hand: the format needed here is small (one VCALENDAR of VEVENTs in UTC) and
the rules that matter are few — CRLF line ends, lines folded at 75 octets without
splitting a UTF-8 character, TEXT values escaped (backslash, semicolon, comma,
newline), times as ``YYYYMMDDTHHMMSSZ``.

Feeds are fetched by calendar programs that cannot log in, so each feed has a private
URL carrying a signed token (:func:`feed_token`) that names the feed (``user`` or
``instrument`` and an id). The token grants read access to that one feed only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryofac.errors import CryofacError

PRODID = "-//cryofac//facility portal//EN"
FEED_SALT = "cryofac-ical-feed/1"
FEED_KINDS = ("user", "instrument")


class FeedTokenError(CryofacError):
    """A calendar feed token is malformed or was not issued by this portal."""


@dataclass(frozen=True)
class CalendarEvent:
    """One booking as a calendar event (times timezone-aware; written in UTC)."""

    uid: str
    start: datetime
    end: datetime
    summary: str
    location: str = ""
    description: str = ""
    status: str = "CONFIRMED"  # CONFIRMED | TENTATIVE | CANCELLED
    url: str = ""
    last_modified: datetime | None = None


def escape_text(value: str) -> str:
    """Escape a TEXT value (RFC 5545 §3.3.11)."""
    return (
        value.replace("\\", "\\\\")
        .replace(";", "\\;")
        .replace(",", "\\,")
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
        .replace("\r", "\\n")
    )


def format_utc(moment: datetime) -> str:
    """A DATE-TIME in UTC form, e.g. ``20260301T080000Z``; naive times are refused."""
    if moment.tzinfo is None:
        raise ValueError(f"calendar time {moment.isoformat()} has no time zone")
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def fold_line(line: str, limit: int = 75) -> str:
    """Fold a content line at ``limit`` octets (continuation lines start with a space)."""
    encoded = line.encode("utf-8")
    if len(encoded) <= limit:
        return line
    parts: list[str] = []
    current = b""
    budget = limit
    for char in line:
        octets = char.encode("utf-8")
        if len(current) + len(octets) > budget:
            parts.append(current.decode("utf-8"))
            current = b""
            budget = limit - 1  # the leading space counts
        current += octets
    parts.append(current.decode("utf-8"))
    return "\r\n ".join(parts)


def render_calendar(name: str, events: Iterable[CalendarEvent], now: datetime | None = None) -> str:
    """A complete VCALENDAR (text with CRLF line ends) holding ``events``."""
    stamp = format_utc(now or datetime.now(UTC))
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{PRODID}",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        f"X-WR-CALNAME:{escape_text(name)}",
        "X-PUBLISHED-TTL:PT15M",
    ]
    for event in events:
        if event.end <= event.start:
            raise ValueError(f"event {event.uid}: end is not after start")
        lines += [
            "BEGIN:VEVENT",
            f"UID:{escape_text(event.uid)}",
            f"DTSTAMP:{stamp}",
            f"DTSTART:{format_utc(event.start)}",
            f"DTEND:{format_utc(event.end)}",
            f"SUMMARY:{escape_text(event.summary)}",
        ]
        if event.location:
            lines.append(f"LOCATION:{escape_text(event.location)}")
        if event.description:
            lines.append(f"DESCRIPTION:{escape_text(event.description)}")
        if event.url:
            lines.append(f"URL:{event.url}")
        if event.last_modified is not None:
            lines.append(f"LAST-MODIFIED:{format_utc(event.last_modified)}")
        lines += [f"STATUS:{event.status}", "TRANSP:OPAQUE", "END:VEVENT"]
    lines.append("END:VCALENDAR")
    return "".join(fold_line(line) + "\r\n" for line in lines)


@dataclass(frozen=True)
class FeedGrant:
    """What a feed token grants: a feed ``kind``, the user it was issued to, an instrument."""

    kind: str
    user_id: int
    instrument_id: str | None = None
    generation: int = 0


def feed_token(
    secret: str, kind: str, user_id: int, instrument_id: str | None = None, generation: int = 0
) -> str:
    """The private token of a feed: ``user`` (that user's bookings) or ``instrument``.

    The token names the user it was issued to, so what an instrument feed reveals
    (who booked, which project) follows that user's permissions at every fetch, and a
    deactivated user's feeds stop working. ``generation`` allows revoking URLs.
    """
    from itsdangerous import URLSafeSerializer

    if kind not in FEED_KINDS:
        raise ValueError(f"feed kind must be one of {FEED_KINDS}, got {kind!r}")
    if (kind == "instrument") != (instrument_id is not None):
        raise ValueError("an instrument feed needs an instrument id, a user feed none")
    payload = [kind, int(user_id), instrument_id, int(generation)]
    return URLSafeSerializer(secret, salt=FEED_SALT).dumps(payload)


def read_feed_token(secret: str, token: str) -> FeedGrant:
    """The :class:`FeedGrant` of a token; :class:`FeedTokenError` if forged or malformed."""
    from itsdangerous import BadData, URLSafeSerializer

    try:
        kind, user_id, instrument_id, generation = URLSafeSerializer(secret, salt=FEED_SALT).loads(
            token
        )
        grant = FeedGrant(str(kind), int(user_id), instrument_id, int(generation))
    except (BadData, ValueError, TypeError) as exc:
        raise FeedTokenError("calendar feed link is not valid") from exc
    if grant.kind not in FEED_KINDS:
        raise FeedTokenError("calendar feed link is not valid")
    return grant


def parse_calendar(text: str) -> list[dict[str, str]]:
    """Unfold and split a VCALENDAR into one dict per VEVENT (property -> raw value).

    A small reader used by tests and by anyone checking a feed; it undoes folding and
    TEXT escaping but does not interpret parameters.
    """
    unfolded: list[str] = []
    for raw in text.split("\r\n"):
        if raw.startswith((" ", "\t")) and unfolded:
            unfolded[-1] += raw[1:]
        elif raw:
            unfolded.append(raw)
    events: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for line in unfolded:
        if line == "BEGIN:VEVENT":
            current = {}
        elif line == "END:VEVENT" and current is not None:
            events.append(current)
            current = None
        elif current is not None:
            key, _, value = line.partition(":")
            current[key.split(";")[0]] = _unescape(value)
    return events


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            out.append("\n" if nxt in "nN" else nxt)
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)
