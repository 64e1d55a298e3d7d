"""Notification texts and their SMTP transport.

A notification is a row of the outbox table (:mod:`portal.domain.outbox`), written in
the transaction of the change that causes it; ``cryofac portal worker``
(:mod:`portal.worker`) delivers it with :func:`send_smtp` when an SMTP server is
configured (:class:`SmtpSettings`, ``CRYOFAC_SMTP_HOST``), otherwise to the log.

Message kinds: ``booking_confirmed``, ``booking_approved``, ``waitlist_offer``,
``run_complete``, ``alarm``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from email.message import EmailMessage

log = logging.getLogger("cryofac.notify")

SUBJECTS: dict[str, str] = {
    "booking_confirmed": "Booking confirmed: {instrument}, {start}",
    "booking_approved": "Booking approved: {instrument}, {start}",
    "waitlist_offer": "A slot opened on {instrument}: {start}",
    "run_complete": "Processing finished: session {session}",
    "alarm": "[{severity}] {room}: {message}",
}

BODIES: dict[str, str] = {
    "booking_confirmed": "Your booking of {instrument} from {start} to {end} is confirmed.\n",
    "booking_approved": "Facility staff approved your booking of {instrument} "
    "from {start} to {end}.\n",
    "waitlist_offer": "A slot on {instrument} from {start} to {end} is free. "
    "It is offered to you until {offer_expires}; book it in the portal to accept.\n",
    "run_complete": "Processing of session {session} finished ({state}). "
    "{movies_processed} movies, {particles} particles, resolution {resolution}.\n",
    "alarm": "{room} {channel}: {message}\nSince {since}. Acknowledge in the technician view.\n",
}


class _Defaults(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def compose(kind: str, **context: object) -> tuple[str, str]:
    """(subject, body) of a message of ``kind``; unknown context keys show as ``?``."""
    if kind not in SUBJECTS:
        raise ValueError(f"unknown notification kind {kind!r} (known: {', '.join(SUBJECTS)})")
    values = _Defaults({k: "" if v is None else v for k, v in context.items()})
    return SUBJECTS[kind].format_map(values), BODIES[kind].format_map(values)


@dataclass(frozen=True)
class SmtpSettings:
    """Where to send mail. From the environment by :meth:`from_env` (None if unset)."""

    host: str
    port: int = 25
    sender: str = "cryofac@localhost"
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout_s: float = 10.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SmtpSettings | None:
        env = dict(os.environ if env is None else env)
        host = env.get("CRYOFAC_SMTP_HOST")
        if not host:
            return None
        return cls(
            host=host,
            port=int(env.get("CRYOFAC_SMTP_PORT", "25")),
            sender=env.get("CRYOFAC_SMTP_FROM", "cryofac@localhost"),
            username=env.get("CRYOFAC_SMTP_USER") or None,
            password=env.get("CRYOFAC_SMTP_PASSWORD") or None,
            starttls=env.get("CRYOFAC_SMTP_STARTTLS", "").lower() in {"1", "true", "yes"},
        )


def to_email(message_id: str, to: list[str], subject: str, body: str, sender: str) -> EmailMessage:
    """The e-mail of one outbox message; its Message-ID is stable across retries."""
    email = EmailMessage()
    email["From"] = sender
    email["To"] = ", ".join(to)
    email["Subject"] = subject
    email["Message-ID"] = f"<{message_id}@cryofac>"
    email.set_content(body)
    return email


def _connect(settings: SmtpSettings):
    import smtplib

    client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s)
    try:
        if settings.starttls:
            client.starttls()
        if settings.username:
            client.login(settings.username, settings.password or "")
    except BaseException:
        client.close()
        raise
    return client


def send_smtp(settings: SmtpSettings, email: EmailMessage) -> None:
    """Send one e-mail over SMTP (STARTTLS and login when configured)."""
    client = _connect(settings)
    try:
        client.send_message(email)
    finally:
        client.quit()


class SmtpConnection:
    """One SMTP connection reused for several messages (opened on first use, reopened
    after the server drops it); use as a context manager."""

    def __init__(self, settings: SmtpSettings):
        self.settings = settings
        self._client = None

    def send(self, email: EmailMessage) -> None:
        import smtplib

        if self._client is None:
            self._client = _connect(self.settings)
        try:
            self._client.send_message(email)
        except (smtplib.SMTPServerDisconnected, OSError):
            self._drop()
            raise

    def _drop(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

    def __enter__(self) -> SmtpConnection:
        return self

    def __exit__(self, *_exc) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):  # the server went away: no goodbye
                self._client.quit()
            self._drop()
