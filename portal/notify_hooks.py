"""Where notifications come from: database changes, finished runs, room alarms.

* Bookings: a SQLAlchemy ``after_flush`` hook on the application's sessions notices a
  booking created as ``confirmed`` (booking confirmation), a booking that goes from
  ``pending`` to ``confirmed`` (staff approval), and a waitlist entry that becomes
  ``offered`` (waitlist offer). Messages are queued only when the transaction commits.
* Runs: :func:`notify_run_finished` queues one message per session when its run folder
  first reports ``complete`` or ``failed`` (called by the run views).
* Alarms: :func:`relay_env_notifications` moves instrument_env's unsent
  ``env_notifications`` (escalations) into the outbox and marks them sent.

Delivery happens in a background thread after queueing (SMTP when configured, else log),
so a slow mail server never slows a request.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from flask import Flask, current_app
from sqlalchemy import inspect
from sqlalchemy.orm import Session

from portal.notify import Outbox, SmtpSettings


def outbox_for(app: Flask) -> Outbox:
    outbox = app.extensions.get("cryofac.outbox")
    if outbox is None:
        path = app.config.get("NOTIFY_OUTBOX") or Path(app.instance_path) / "outbox.jsonl"
        outbox = Outbox(path)
        app.extensions["cryofac.outbox"] = outbox
    return outbox


def smtp_for(app: Flask) -> SmtpSettings | None:
    host = app.config.get("SMTP_HOST")
    if host:
        return SmtpSettings(
            host=host,
            port=int(app.config.get("SMTP_PORT", 25)),
            sender=app.config.get("SMTP_FROM", "cryofac@localhost"),
            username=app.config.get("SMTP_USER"),
            password=app.config.get("SMTP_PASSWORD"),
            starttls=bool(app.config.get("SMTP_STARTTLS", False)),
        )
    return SmtpSettings.from_env()


def deliver_soon(app: Flask) -> None:
    """Deliver pending messages in a daemon thread (synchronously when TESTING)."""
    outbox, smtp = outbox_for(app), smtp_for(app)
    if app.config.get("TESTING") or app.config.get("NOTIFY_SYNC"):
        outbox.deliver_pending(smtp)
        return
    threading.Thread(target=outbox.deliver_pending, args=(smtp,), daemon=True).start()


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "?"


def _booking_context(session: Session, booking) -> dict:
    from portal.models import Instrument

    instrument = booking.instrument or session.get(Instrument, booking.instrument_id)
    return {
        "instrument": instrument.name if instrument else booking.instrument_id,
        "start": _when(booking.start_at),
        "end": _when(booking.end_at),
    }


def _status_change(obj, attribute: str) -> tuple[object, object] | None:
    history = inspect(obj).attrs[attribute].history
    if not history.has_changes():
        return None
    before = history.deleted[0] if history.deleted else None
    after = history.added[0] if history.added else None
    return before, after


def _collect(session: Session, _flush_context) -> None:
    from portal.models import Booking, User, WaitlistEntry

    pending: list = session.info.setdefault("cryofac.notifications", [])
    for obj in list(session.new) + list(session.dirty):
        if isinstance(obj, Booking):
            change = _status_change(obj, "status")
            if change is None:
                continue
            before, after = change
            kind = None
            if after == "confirmed" and before is None:
                kind = "booking_confirmed"
            elif after == "confirmed" and before == "pending":
                kind = "booking_approved"
            if kind:
                user = obj.user or session.get(User, obj.user_id)
                if user is not None and user.email:
                    pending.append((kind, user.email, _booking_context(session, obj)))
        elif isinstance(obj, WaitlistEntry):
            change = _status_change(obj, "state")
            if change is not None and change[1] == "offered":
                user = session.get(User, obj.user_id)
                from portal.models import Instrument

                instrument = session.get(Instrument, obj.instrument_id)
                if user is not None and user.email:
                    pending.append(
                        (
                            "waitlist_offer",
                            user.email,
                            {
                                "instrument": instrument.name if instrument else obj.instrument_id,
                                "start": _when(obj.start_at),
                                "end": _when(obj.end_at),
                                "offer_expires": "the slot is taken",
                            },
                        )
                    )


def install(app: Flask) -> None:
    """Hook booking and waitlist changes of ``app``'s database sessions to the outbox."""
    maker = app.extensions.get("cryofac.sessionmaker")
    if maker is None:
        return

    def after_commit(session: Session) -> None:
        queued = session.info.pop("cryofac.notifications", [])
        if not queued:
            return
        outbox = outbox_for(app)
        for kind, to, context in queued:
            outbox.enqueue(kind, to, **context)
        deliver_soon(app)

    def after_rollback(session: Session) -> None:
        session.info.pop("cryofac.notifications", None)

    sa.event.listen(maker, "after_flush", _collect)
    sa.event.listen(maker, "after_commit", after_commit)
    sa.event.listen(maker, "after_soft_rollback", lambda s, _t: after_rollback(s))


def notify_run_finished(session_row, summary, recipients: list[str]) -> bool:
    """Queue ``run_complete`` once per session when its run is complete or failed."""
    if summary is None or summary.state not in ("complete", "failed") or not recipients:
        return False
    from portal.downloads_service import cache_dir

    marker = cache_dir() / f"session_{session_row.id}" / f"notified_{summary.state}"
    if marker.exists():
        return False
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(marker, "x", encoding="utf-8") as handle:  # exactly once across processes
            handle.write(datetime.now(UTC).isoformat())
    except FileExistsError:
        return False
    resolution = f"{summary.resolution_A:.2f} Å" if summary.resolution_A else "no map yet"
    outbox_for(current_app).enqueue(
        "run_complete",
        recipients,
        session=session_row.id,
        state=summary.state,
        movies_processed=summary.movies_processed,
        particles=summary.particles,
        resolution=resolution,
    )
    deliver_soon(current_app)
    return True


def relay_env_notifications(db: Session) -> int:
    """Queue instrument_env's unsent alarm notifications; returns how many were relayed."""
    try:
        from instrument_env.models import Notification
    except ImportError:
        return 0
    rows = db.scalars(
        sa.select(Notification)
        .where(Notification.sent_at.is_(None))
        .order_by(Notification.id)
        .with_for_update(skip_locked=True)  # several workers: each row relayed once
    ).all()
    if not rows:
        return 0
    outbox = outbox_for(current_app)
    now = datetime.now(UTC)
    for row in rows:
        outbox.enqueue_raw("alarm", row.recipient, row.subject, row.body or row.subject)
        row.sent_at = now
    db.commit()
    deliver_soon(current_app)
    return len(rows)


def start_relay_thread(app: Flask, interval_s: float) -> threading.Thread:
    """Relay instrument_env's alarm notifications every ``interval_s`` seconds (daemon)."""

    def loop() -> None:
        import time

        while True:
            time.sleep(interval_s)
            try:
                with app.app_context(), app.extensions["cryofac.sessionmaker"]() as db:
                    relay_env_notifications(db)
            except Exception:  # keep relaying; the next round retries
                app.logger.exception("relaying alarm notifications failed")

    thread = threading.Thread(target=loop, name="cryofac-notify-relay", daemon=True)
    thread.start()
    return thread
