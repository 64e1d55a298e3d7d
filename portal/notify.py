"""Notification outbox: messages are queued first, then delivered.

Queueing never fails a user's request because a mail server is down: the portal
appends a message to the outbox (a JSON Lines file under the instance folder, guarded
by an exclusive file lock so several server processes can share it) and
:func:`deliver_pending` sends what is pending — by SMTP when ``CRYOFAC_SMTP_HOST`` (or
an explicit :class:`SmtpSettings`) is configured, otherwise by writing it to the log.
Failed sends stay pending with the error recorded and are retried next time.

Message kinds: ``booking_confirmed``, ``booking_approved``, ``waitlist_offer``,
``run_complete``, ``alarm``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

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


@dataclass
class Message:
    """One queued notification."""

    kind: str
    to: list[str]
    subject: str
    body: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    status: str = "pending"  # pending | sent | logged
    attempts: int = 0
    error: str | None = None
    sent_at: str | None = None


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


class Outbox:
    """A JSON Lines outbox file shared by processes through an exclusive ``flock``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(exist_ok=True)

    @contextmanager
    def _locked(self) -> Iterator[list[Message]]:
        with open(self.path, "r+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                messages = [Message(**json.loads(line)) for line in handle if line.strip()]
                before = [asdict(m) for m in messages]
                yield messages
                if [asdict(m) for m in messages] != before:
                    handle.seek(0)
                    handle.truncate()
                    handle.write("".join(json.dumps(asdict(m)) + "\n" for m in messages))
                    handle.flush()
                    os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def enqueue(self, kind: str, to: list[str] | str, **context: object) -> Message:
        """Queue a message of ``kind`` for ``to`` (one address or a list)."""
        recipients = [to] if isinstance(to, str) else list(to)
        recipients = [r for r in recipients if r]
        if not recipients:
            raise ValueError("a notification needs at least one recipient")
        subject, body = compose(kind, **context)
        message = Message(kind=kind, to=recipients, subject=subject, body=body)
        with self._locked() as messages:
            messages.append(message)
        return message

    def enqueue_raw(self, kind: str, to: list[str] | str, subject: str, body: str) -> Message:
        """Queue a message whose subject and body were written elsewhere (e.g. escalations)."""
        recipients = [r for r in ([to] if isinstance(to, str) else list(to)) if r]
        if not recipients:
            raise ValueError("a notification needs at least one recipient")
        message = Message(kind=kind, to=recipients, subject=subject, body=body)
        with self._locked() as messages:
            messages.append(message)
        return message

    def messages(self, status: str | None = None) -> list[Message]:
        with self._locked() as messages:
            return [m for m in messages if status is None or m.status == status]

    def deliver_pending(
        self,
        smtp: SmtpSettings | None = None,
        send: Callable[[SmtpSettings, EmailMessage], None] | None = None,
    ) -> int:
        """Deliver pending messages; returns how many left the outbox (sent or logged)."""
        done = 0
        with self._locked() as messages:
            for message in messages:
                if message.status != "pending":
                    continue
                message.attempts += 1
                if smtp is None:
                    log.info("notification %s to %s: %s", message.kind, message.to, message.subject)
                    message.status = "logged"
                else:
                    try:
                        (send or send_smtp)(smtp, to_email(message, smtp.sender))
                    except Exception as exc:  # network / SMTP errors: keep for retry
                        message.error = f"{exc.__class__.__name__}: {exc}"
                        log.warning("notification %s not sent: %s", message.id, message.error)
                        continue
                    message.status = "sent"
                    message.error = None
                message.sent_at = datetime.now(UTC).isoformat()
                done += 1
        return done


def to_email(message: Message, sender: str) -> EmailMessage:
    email = EmailMessage()
    email["From"] = sender
    email["To"] = ", ".join(message.to)
    email["Subject"] = message.subject
    email["Message-ID"] = f"<{message.id}@cryofac>"
    email.set_content(message.body)
    return email


def send_smtp(settings: SmtpSettings, email: EmailMessage) -> None:
    """Send one e-mail over SMTP (STARTTLS and login when configured)."""
    import smtplib

    with smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s) as client:
        if settings.starttls:
            client.starttls()
        if settings.username:
            client.login(settings.username, settings.password or "")
        client.send_message(email)
