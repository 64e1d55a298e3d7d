"""``cryofac portal worker``: delivers the notification outbox and runs the periodic jobs.

Delivery (every ``poll_s``): due ``pending`` rows of ``outbox_messages`` are *claimed* in
a short transaction (their ``next_attempt_at`` pushed ``lease_s`` ahead; ``FOR UPDATE
SKIP LOCKED`` on PostgreSQL so several workers share the work), sent with no database
transaction open (a slow mail server holds no lock), then marked ``sent`` — or, after a
failure, left ``pending`` with the error and the next attempt ``backoff_base_s · 2^(n-1)``
seconds later (at most ``backoff_max_s``), ``failed`` after ``max_attempts`` or on a
permanent (5xx) refusal. A worker killed between sending and marking resends the message
after the lease (the Message-ID stays the same): at least once, never lost.

Periodic jobs (every ``jobs_every_s``): notices of finished processing runs (once per
session and state, read from the run folders whatever pages anyone opens), alarm
evaluation and escalations (instrument_env's ``env_notifications`` moved into the outbox
in the transaction that marks them relayed), pruning of delivered rows older than
``keep_delivered_days``, and pruning of log-in throttle rows whose failures are forgotten
(``login_policy.forget_after_min``). No Flask.
"""

from __future__ import annotations

import logging
import smtplib
import threading
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from portal.domain import login_throttle, outbox
from portal.domain.login_throttle import LoginPolicy
from portal.domain.timezones import facility_zone, localise_times, showing_zone
from portal.models import AcqSession, OutboxMessage, utcnow
from portal.notify import SmtpConnection, SmtpSettings, to_email

log = logging.getLogger("cryofac.worker")

Sender = Callable[[SmtpSettings, EmailMessage], None]


@dataclass(frozen=True)
class WorkerOptions:
    """How the worker delivers and how often it looks (seconds unless named otherwise)."""

    poll_s: float = 2.0
    jobs_every_s: float = 30.0
    batch: int = 100
    max_attempts: int = 8
    backoff_base_s: float = 30.0
    backoff_max_s: float = 3600.0
    lease_s: float = 300.0
    keep_delivered_days: float = 30.0
    evaluate_alarms: bool = True
    config_dir: str | None = None  # facility.yaml (time zone), limits.yaml (alarms)
    timezone: str | None = None  # overrides facility.yaml's zone for notice texts
    #: failures older than its ``forget_after_min`` are pruned from the throttle table
    login_policy: LoginPolicy = field(default_factory=LoginPolicy)

    def __post_init__(self) -> None:
        for name in ("poll_s", "jobs_every_s", "backoff_base_s", "backoff_max_s", "lease_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"worker option {name} must be > 0, got {getattr(self, name)}")
        if self.batch < 1 or self.max_attempts < 1:
            raise ValueError("worker options batch and max_attempts must be at least 1")
        if self.keep_delivered_days < 0:
            raise ValueError("worker option keep_delivered_days must be >= 0")


@dataclass
class Report:
    """What one round did (counts of messages or rows)."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    queued: dict[str, int] = field(default_factory=dict)
    pruned: int = 0
    throttle_pruned: int = 0


def backoff_s(attempts: int, options: WorkerOptions) -> float:
    """Seconds before attempt ``attempts + 1`` after ``attempts`` failed ones."""
    return min(options.backoff_base_s * 2 ** max(attempts - 1, 0), options.backoff_max_s)


def _permanent(exc: Exception) -> bool:
    """A refusal that retrying cannot cure (SMTP 5xx, every recipient refused)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return True
    code = getattr(exc, "smtp_code", None)
    return isinstance(code, int) and 500 <= code < 600


def claim(db: Session, now: datetime, options: WorkerOptions) -> list[OutboxMessage]:
    """Due pending messages, claimed for ``lease_s`` (the caller commits)."""
    query = (
        sa.select(OutboxMessage)
        .where(OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now)
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(options.batch)
    )
    if db.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = list(db.scalars(query))
    for row in rows:
        row.attempts += 1
        row.next_attempt_at = now + timedelta(seconds=options.lease_s)
    return rows


def deliver_due(
    factory: sessionmaker[Session],
    smtp: SmtpSettings | None,
    options: WorkerOptions,
    *,
    send: Sender | None = None,
    now: Callable[[], datetime] = utcnow,
) -> Report:
    """Claim, send and mark one batch of due messages.

    One SMTP connection serves the batch (``send``: a per-message sender instead, for
    tests); outcomes are written every ``MARK_EVERY`` messages, so a worker killed mid-batch
    resends at most that many (after the lease), never loses one.
    """
    report = Report()
    with factory() as db:
        rows = claim(db, now(), options)
        db.commit()
        claimed = [(r.id, r.to, r.subject, r.body, r.attempts, r.kind) for r in rows]
    if not claimed:
        return report
    outcomes: list[tuple[int, int, Exception | None]] = []
    with SmtpConnection(smtp) if smtp is not None else nullcontext() as connection:
        for message_id, to, subject, body, attempts, kind in claimed:
            error: Exception | None = None
            if smtp is None:
                log.info("notification %s to %s: %s", kind, ", ".join(to), subject)
            else:
                email = to_email(f"outbox-{message_id}", to, subject, body, smtp.sender)
                try:
                    (connection.send(email) if send is None else send(smtp, email))
                except Exception as exc:  # network and SMTP errors: recorded, retried
                    error = exc
            outcomes.append((message_id, attempts, error))
            if len(outcomes) >= MARK_EVERY:
                _mark(factory, outcomes, smtp is not None, options, now(), report)
                outcomes = []
    _mark(factory, outcomes, smtp is not None, options, now(), report)
    return report


MARK_EVERY = 20


def _mark(
    factory: sessionmaker[Session],
    outcomes: list[tuple[int, int, Exception | None]],
    by_smtp: bool,
    options: WorkerOptions,
    at: datetime,
    report: Report,
) -> None:
    """Record the outcome of sent messages, in one transaction."""
    if not outcomes:
        return
    with factory() as db:
        rows = {
            r.id: r
            for r in db.scalars(
                sa.select(OutboxMessage).where(OutboxMessage.id.in_([o[0] for o in outcomes]))
            )
        }
        for message_id, attempts, error in outcomes:
            row = rows.get(message_id)
            if row is None:
                continue
            if error is None:
                row.status = "sent" if by_smtp else "logged"
                row.sent_at = at
                row.last_error = None
                report.sent += 1
                continue
            row.last_error = f"{error.__class__.__name__}: {error}"[:2000]
            if _permanent(error) or attempts >= options.max_attempts:
                row.status = "failed"
                report.failed += 1
                log.error("notification %s failed for good: %s", message_id, row.last_error)
            else:
                row.next_attempt_at = at + timedelta(seconds=backoff_s(attempts, options))
                report.retried += 1
                log.warning(
                    "notification %s not sent (attempt %d): %s",
                    message_id,
                    attempts,
                    row.last_error,
                )
        db.commit()


# -- periodic jobs ------------------------------------------------------------------


#: Sessions ended longer ago than this (days) are no longer watched for a finished run.
RUN_WATCH_DAYS = 30


def _has_table(db: Session, name: str) -> bool:
    return sa.inspect(db.connection()).has_table(name)


def queue_finished_runs(db: Session, now: datetime) -> int:
    """``run_complete`` once per session and final state (complete or failed) of its run
    (sessions running, or ended within :data:`RUN_WATCH_DAYS`)."""
    from portal.runs.folder import RunFolderError, read_summary

    recent = now - timedelta(days=RUN_WATCH_DAYS)
    sessions = db.execute(
        sa.select(AcqSession.id, AcqSession.project_id, AcqSession.run_dir).where(
            AcqSession.run_dir.is_not(None),
            sa.or_(AcqSession.ended_at.is_(None), AcqSession.ended_at > recent),
        )
    ).all()
    if not sessions:
        return 0
    done = set(
        db.scalars(
            sa.select(OutboxMessage.dedupe_key).where(
                OutboxMessage.dedupe_key.like("run_finished:%")
            )
        )
    )
    queued = 0
    for session_id, project_id, run_dir in sessions:
        if f"run_finished:{session_id}:complete" in done:
            continue
        try:
            summary = read_summary(run_dir)
        except RunFolderError:
            continue  # no summary yet, or unreadable: the run page says why
        key = f"run_finished:{session_id}:{summary.state}"
        if summary.state not in ("complete", "failed") or key in done:
            continue
        resolution = f"{summary.resolution_A:.2f} Å" if summary.resolution_A else "no map yet"
        added = outbox.enqueue(
            db,
            "run_complete",
            outbox.project_emails(db, project_id),
            dedupe_key=key,
            now=now,
            session=session_id,
            state=summary.state,
            movies_processed=summary.movies_processed,
            particles=summary.particles,
            resolution=resolution,
        )
        queued += added is not None
    return queued


def relay_escalations(db: Session, now: datetime) -> int:
    """Move instrument_env's unsent notifications (alarm escalations) into the outbox."""
    try:
        from instrument_env.models import Notification
    except ImportError:  # the portal without environment monitoring
        return 0
    if not _has_table(db, Notification.__tablename__):  # its migrations never run here
        return 0
    query = sa.select(Notification).where(Notification.sent_at.is_(None)).order_by(Notification.id)
    if db.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = list(db.scalars(query))
    for row in rows:
        outbox.enqueue_raw(  # times as people read them: the facility's zone, named
            db,
            "alarm",
            row.recipient,
            localise_times(row.subject),
            localise_times(row.body or row.subject),
            dedupe_key=f"env_notification:{row.id}",
            now=now,
        )
        row.sent_at = now  # relayed: the outbox row now carries it
    return len(rows)


def evaluate_alarms(db: Session, now: datetime, config_dir: str | None) -> int:
    """Advance instrument_env's alarms to ``now`` (escalations are written by it)."""
    try:
        from instrument_env import alarms
        from instrument_env.limits import load_env_config
    except ImportError:
        return 0
    if not _has_table(db, "env_alarms"):
        return 0
    return len(alarms.evaluate(db, now, load_env_config(config_dir)))


def prune_delivered(db: Session, now: datetime, keep_days: float) -> int:
    """Delete sent and logged messages delivered more than ``keep_days`` ago."""
    cutoff = now - timedelta(days=keep_days)
    result = db.execute(
        sa.delete(OutboxMessage).where(
            OutboxMessage.status.in_(("sent", "logged")), OutboxMessage.sent_at < cutoff
        )
    )
    return int(result.rowcount or 0)


def run_jobs(
    factory: sessionmaker[Session], options: WorkerOptions, now: datetime | None = None
) -> Report:
    """One round of the periodic jobs, each in its own transaction (one failing job does
    not stop the others; it is logged and retried next round). Notice texts show times
    in the facility's zone (``config_dir``'s facility.yaml, or ``timezone``)."""
    now = now or utcnow()
    with showing_zone(facility_zone(options.config_dir, options.timezone)):
        return _run_jobs(factory, options, now)


def _run_jobs(factory: sessionmaker[Session], options: WorkerOptions, now: datetime) -> Report:
    report = Report()
    jobs: list[tuple[str, Callable[[Session], int]]] = [
        ("run_complete", lambda db: queue_finished_runs(db, now)),
    ]
    if options.evaluate_alarms:
        jobs.append(("alarms_evaluated", lambda db: evaluate_alarms(db, now, options.config_dir)))
    jobs += [
        ("alarm", lambda db: relay_escalations(db, now)),
        ("pruned", lambda db: prune_delivered(db, now, options.keep_delivered_days)),
        ("throttle_pruned", lambda db: login_throttle.prune(db, now, options.login_policy)),
    ]
    for name, job in jobs:
        try:
            with factory() as db:
                count = job(db)
                db.commit()
        except Exception:  # logged; the next round tries again
            log.exception("worker job %s failed", name)
            continue
        if name in ("pruned", "throttle_pruned"):
            setattr(report, name, count)
        else:
            report.queued[name] = count
    return report


class Worker:
    """The delivery loop and the periodic jobs, until :meth:`stop`."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        smtp: SmtpSettings | None,
        options: WorkerOptions,
        send: Sender | None = None,
    ):
        self.factory, self.smtp, self.options, self.send = factory, smtp, options, send
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run_once(self) -> Report:
        """The periodic jobs, then delivery until nothing is due."""
        report = run_jobs(self.factory, self.options)
        while True:
            round_ = deliver_due(self.factory, self.smtp, self.options, send=self.send)
            report.sent += round_.sent
            report.retried += round_.retried
            report.failed += round_.failed
            if round_.sent + round_.retried + round_.failed < self.options.batch:
                return report

    def run_forever(self) -> None:
        last_jobs = float("-inf")
        import time

        while not self._halt.is_set():
            if time.monotonic() - last_jobs >= self.options.jobs_every_s:
                run_jobs(self.factory, self.options)
                last_jobs = time.monotonic()
            try:
                done = deliver_due(self.factory, self.smtp, self.options, send=self.send)
            except Exception:  # e.g. the database restarting: wait and try again
                log.exception("outbox delivery round failed")
                done = Report()
            busy = done.sent + done.retried + done.failed >= self.options.batch
            if not busy:
                self._halt.wait(self.options.poll_s)
