"""iCalendar rendering and notification texts (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from portal.ical import (
    CalendarEvent,
    FeedTokenError,
    feed_token,
    fold_line,
    parse_calendar,
    read_feed_token,
    render_calendar,
)
from portal.notify import SmtpSettings, compose, to_email

CET = timezone(timedelta(hours=1))


def test_calendar_is_rfc5545_shaped_and_round_trips():
    start = datetime(2026, 3, 2, 9, 0, tzinfo=CET)
    long_text = "Krios G4, room B1.07; project 12, apoferritin — grid batch 7 " * 3
    events = [
        CalendarEvent(
            "booking-1@cryofac",
            start,
            start + timedelta(hours=48),
            "Krios: Smith",
            location="Room B1.07",
            description=long_text,
        ),
        CalendarEvent(
            "booking-2@cryofac",
            start + timedelta(days=3),
            start + timedelta(days=3, hours=2),
            "Vitrobot, Lee",
            status="TENTATIVE",
        ),
    ]
    text = render_calendar("Krios G4", events, now=datetime(2026, 3, 1, tzinfo=UTC))
    assert text.startswith("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:")
    assert text.endswith("END:VCALENDAR\r\n")
    lines = text.split("\r\n")
    assert all(len(line.encode()) <= 75 for line in lines)
    assert "\n" not in text.replace("\r\n", "")
    assert "DTSTART:20260302T080000Z" in lines  # 09:00 CET = 08:00 UTC
    assert "DTEND:20260304T080000Z" in lines
    parsed = parse_calendar(text)
    assert parsed[0]["DESCRIPTION"] == long_text
    assert parsed[0]["LOCATION"] == "Room B1.07"
    assert parsed[1]["SUMMARY"] == "Vitrobot, Lee"
    assert parsed[1]["STATUS"] == "TENTATIVE"


def test_fold_never_splits_a_utf8_character():
    line = "SUMMARY:" + "é" * 100
    folded = fold_line(line)
    for part in folded.split("\r\n"):
        assert len(part.encode("utf-8")) <= 75
        part.encode("utf-8").decode("utf-8")
    assert folded.replace("\r\n ", "") == line


def test_naive_or_inverted_times_are_refused():
    naive = datetime(2026, 1, 1, 8)
    with pytest.raises(ValueError, match="time zone"):
        render_calendar("x", [CalendarEvent("u", naive, naive + timedelta(hours=1), "s")])
    aware = naive.replace(tzinfo=UTC)
    with pytest.raises(ValueError, match="not after"):
        render_calendar("x", [CalendarEvent("u", aware, aware, "s")])


def test_feed_tokens():
    token = feed_token("k", "instrument", 4, "krios1")
    grant = read_feed_token("k", token)
    assert (grant.kind, grant.user_id, grant.instrument_id) == ("instrument", 4, "krios1")
    assert read_feed_token("k", feed_token("k", "user", 9)).instrument_id is None
    with pytest.raises(FeedTokenError):
        read_feed_token("other", token)
    with pytest.raises(FeedTokenError):
        read_feed_token("k", token + "x")
    with pytest.raises(ValueError):
        feed_token("k", "project", 1)
    with pytest.raises(ValueError):
        feed_token("k", "instrument", 1)


def test_email_of_an_outbox_message():
    email = to_email("outbox-7", ["a@lab.org", "b@lab.org"], "Subject", "3.1 Å\n", "p@lab.org")
    assert email["To"] == "a@lab.org, b@lab.org" and email["From"] == "p@lab.org"
    assert email["Message-ID"] == "<outbox-7@cryofac>"
    assert "3.1 Å" in email.get_content()


def test_compose_and_env_settings():
    subject, body = compose("waitlist_offer", instrument="Glacios", start="Mon 09:00")
    assert subject == "A slot opened on Glacios: Mon 09:00"
    assert "?" in body  # missing context is visible, not an exception
    with pytest.raises(ValueError):
        compose("spam")
    assert SmtpSettings.from_env({}) is None
    smtp = SmtpSettings.from_env(
        {
            "CRYOFAC_SMTP_HOST": "smtp.lab",
            "CRYOFAC_SMTP_PORT": "587",
            "CRYOFAC_SMTP_STARTTLS": "yes",
        }
    )
    assert (smtp.host, smtp.port, smtp.starttls) == ("smtp.lab", 587, True)
