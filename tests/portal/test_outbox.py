"""The transactional outbox and ``cryofac portal worker``, against a real SMTP server.

Notices are rows written with the change that causes them; the worker claims due rows,
sends them over SMTP (aiosmtpd on loopback), retries transient failures with
exponential backoff, gives up on permanent ones, and prunes delivered rows. A booking
request only inserts one row, however many notices exist; kill -9 of the server and the
worker in the middle of a burst loses neither bookings nor notices.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from portal.domain import accounts
from portal.domain.outbox import messages
from portal.models import Booking, OutboxMessage, User
from portal.notify import SmtpSettings
from portal.worker import WorkerOptions, deliver_due, prune_delivered
from tests.portal.conftest import book_ok
from tests.portal.served import cryofac, wait_for_port
from tests.portal.smtp_server import SmtpServer, free_port


@pytest.fixture
def smtp():
    server = SmtpServer().start()
    yield server
    server.stop()


def _give_emails(world, *names: str) -> None:
    with world.db() as db:
        for user in db.scalars(sa.select(User).where(User.username.in_(names))):
            user.email = f"{user.username}@lab.test"
        db.commit()


def _book(client, headers, project_id, start: datetime, instrument="glacios1", hours=4):
    return book_ok(client, headers, project_id, start, instrument, hours)


def _rows(world, kind: str | None = None) -> list[OutboxMessage]:
    with world.db() as db:
        return messages(db, kind)


def test_worker_sends_over_smtp_retries_with_backoff_gives_up_and_prunes(world, client, smtp):
    _give_emails(world, "alice", "pi", "mallory")
    factory = world.app.extensions["cryofac.sessionmaker"]
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=3)
    alice = world.token(client, "alice")
    for k in range(3):
        _book(client, alice, world.project_id, base + timedelta(hours=6 * k))
    assert [m.status for m in _rows(world)] == ["pending"] * 3
    settings = SmtpSettings(host="127.0.0.1", port=smtp.port, sender="portal@lab.test")
    options = WorkerOptions(backoff_base_s=60, max_attempts=3)
    clock = [datetime.now(UTC)]

    def now() -> datetime:
        return clock[0]

    smtp.received.refuse_first = 1  # the server says "try again later" once
    report = deliver_due(factory, settings, options, now=now)
    assert (report.sent, report.retried, report.failed) == (2, 1, 0)
    (waiting,) = [m for m in _rows(world) if m.status == "pending"]
    assert waiting.attempts == 1 and "451" in waiting.last_error
    assert waiting.next_attempt_at == clock[0] + timedelta(seconds=60)
    assert deliver_due(factory, settings, options, now=now).sent == 0  # not due yet
    clock[0] += timedelta(seconds=61)
    assert deliver_due(factory, settings, options, now=now).sent == 1
    assert [m.status for m in _rows(world)] == ["sent"] * 3
    got = smtp.received.messages
    assert len(got) == 3 and {m["To"] for m in got} == {"alice@lab.test"}
    assert all(m["Subject"].startswith("Booking confirmed: Glacios") for m in got)
    assert len(set(smtp.received.ids())) == 3

    # a permanent refusal (550) fails at once; a transient one is retried at 60 s, then
    # 120 s (doubling), and fails after max_attempts
    smtp.received.refuse = {
        "pi@lab.test": "550 5.1.1 no such mailbox",
        "mallory@lab.test": "451 4.3.0 busy",
    }
    _book(client, world.token(client, "pi"), world.project_id, base + timedelta(hours=30))
    _book(client, world.token(client, "mallory"), world.other_project_id, base + timedelta(days=2))
    report = deliver_due(factory, settings, options, now=now)
    assert (report.sent, report.retried, report.failed) == (0, 1, 1)
    by_to = {m.to[0]: m for m in _rows(world) if m.status != "sent"}
    assert by_to["pi@lab.test"].status == "failed" and "550" in by_to["pi@lab.test"].last_error
    retry_at = by_to["mallory@lab.test"].next_attempt_at
    assert retry_at == clock[0] + timedelta(seconds=60)
    clock[0] = retry_at
    assert deliver_due(factory, settings, options, now=now).retried == 1
    retry_at = next(m for m in _rows(world) if m.to == ["mallory@lab.test"]).next_attempt_at
    assert retry_at == clock[0] + timedelta(seconds=120)
    clock[0] = retry_at
    assert deliver_due(factory, settings, options, now=now).failed == 1
    statuses = sorted(m.status for m in _rows(world))
    assert statuses == ["failed", "failed", "sent", "sent", "sent"]
    assert len(smtp.received.messages) == 3  # nothing more went out

    # delivered rows are pruned after keep_delivered_days; failed ones are kept to be seen
    with factory() as db:
        assert prune_delivered(db, clock[0] + timedelta(days=29), 30) == 0
        assert prune_delivered(db, clock[0] + timedelta(days=31), 30) == 3
        db.commit()
    assert [m.status for m in _rows(world)] == ["failed", "failed"]


def test_no_smtp_server_answering_keeps_every_notice_for_later(world, client):
    _give_emails(world, "alice")
    factory = world.app.extensions["cryofac.sessionmaker"]
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=3)
    _book(client, world.token(client, "alice"), world.project_id, start)
    nowhere = SmtpSettings(host="127.0.0.1", port=free_port(), timeout_s=2)
    report = deliver_due(factory, nowhere, WorkerOptions())
    assert (report.sent, report.retried) == (0, 1)
    (row,) = _rows(world)
    assert row.status == "pending" and row.attempts == 1
    assert "Connection" in row.last_error or "refused" in row.last_error.lower()


def test_a_booking_inserts_one_row_whatever_the_outbox_holds(world, client):
    """20,000 delivered notices: the booking request never reads the outbox, it only
    inserts its own notice (so its cost does not grow with the outbox)."""
    from tests.portal.test_statement_counts import statements

    _give_emails(world, "alice")
    sent_at = datetime.now(UTC) - timedelta(days=1)
    rows = [
        {
            "kind": "booking_confirmed",
            "recipients": "alice@lab.test",
            "subject": f"old notice {k}",
            "body": "",
            "status": "sent",
            "attempts": 1,
            "created_at": sent_at,
            "next_attempt_at": sent_at,
            "sent_at": sent_at,
        }
        for k in range(20_000)
    ]
    with world.db() as db:
        db.execute(sa.insert(OutboxMessage), rows)
        db.commit()
    headers = world.token(client, "alice")
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=3)
    with statements(world.app) as sent:
        _book(client, headers, world.project_id, start)
    touching = [s for s in sent if "outbox_messages" in s]
    assert len(touching) == 1 and touching[0].lstrip().upper().startswith("INSERT"), touching
    assert len(_rows(world, "booking_confirmed")) == 20_001


# -- kill -9 in the middle of a burst -----------------------------------------------------


@pytest.mark.slow
def test_kill_9_mid_burst_loses_neither_bookings_nor_notices(world, smtp, tmp_path):
    _give_emails(world, "alice", "mallory")
    url = world.app.config["DATABASE_URL"]
    with world.db() as db:
        users = {u.username: u for u in db.scalars(sa.select(User))}
        tokens = {name: accounts.issue_token(db, users[name], 1) for name in ("alice", "mallory")}
        db.commit()
    port = free_port()
    server = cryofac("portal", "serve", "--database-url", url, "--port", str(port))
    worker_args = ["portal", "worker", "--database-url", url, "--smtp-host", "127.0.0.1"]
    worker_args += ["--smtp-port", str(smtp.port), "--poll-s", "0.05", "--lease-s", "1"]
    worker_args += ["--jobs-every-s", "3600", "--no-evaluate-alarms"]
    worker = cryofac(*worker_args)
    try:
        wait_for_port(port, server, "cryofac portal serve")
        base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=3)
        n = 80
        answered: list[tuple[int, int | None]] = []  # (status, booking id)
        lock = threading.Lock()
        killed = threading.Event()

        def book(i: int) -> None:
            name, project = (
                ("alice", world.project_id) if i % 2 else ("mallory", world.other_project_id)
            )
            start = base + timedelta(hours=3 * i)
            body = {
                "instrument_id": "glacios1",
                "project_id": project,
                "start": start.isoformat(),
                "end": (start + timedelta(hours=2)).isoformat(),
            }
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/bookings",
                data=json.dumps(body).encode(),
                headers={
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {tokens[name]}",
                },
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    outcome = (response.status, json.loads(response.read())["id"])
            except urllib.error.HTTPError as exc:
                outcome = (exc.code, None)
            except OSError:  # the server was killed under this request: outcome unknown
                return
            with lock:
                answered.append(outcome)
                if len(answered) == n // 2 and not killed.is_set():
                    killed.set()
                    os.kill(server.pid, signal.SIGKILL)
                    os.kill(worker.pid, signal.SIGKILL)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(book, range(n)))
        assert killed.is_set()
    finally:
        for proc in (server, worker):
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)
    assert {status for status, _ in answered} == {201}, answered  # no 500, no refusal
    created = {booking_id for _, booking_id in answered}
    with world.db() as db:
        held = db.execute(
            sa.select(Booking.id, User.email)
            .join(User, User.id == Booking.user_id)
            .where(Booking.status == "confirmed", User.username.in_(("alice", "mallory")))
        ).all()
    assert created <= {booking_id for booking_id, _ in held}  # every 201 is kept
    rows = _rows(world, "booking_confirmed")
    assert len(rows) == len(held)  # one notice per booking that committed, no more
    assert sorted(m.to[0] for m in rows) == sorted(email for _, email in held)

    time.sleep(1.5)  # past the killed worker's lease on the messages it had claimed
    again = cryofac(*worker_args, "--once")
    assert again.wait(120) == 0
    assert {m.status for m in _rows(world)} == {"sent"}
    delivered = set(smtp.received.ids())
    assert {f"<outbox-{m.id}@cryofac>" for m in rows} <= delivered  # at least once each


def test_the_worker_prunes_forgotten_log_in_throttle_rows(world):
    """Log-in failures older than the policy's window are deleted by the worker's
    periodic jobs (nothing else prunes them); recent ones stay and still count."""
    from portal.domain import login_throttle
    from portal.domain.login_throttle import LoginPolicy
    from portal.domain.timezones import display_zone, use_display_zone
    from portal.models import LoginThrottle
    from portal.worker import Worker

    engine = world.app.extensions["cryofac.engine"]
    policy = LoginPolicy(forget_after_min=60)
    now = datetime.now(UTC)
    for k in range(30):  # strangers' guesses two hours ago, from 30 addresses
        login_throttle.reserve(engine, f"guess{k}", f"10.0.0.{k}", policy, now - timedelta(hours=2))
    login_throttle.reserve(engine, "alice", "10.9.9.9", policy, now - timedelta(minutes=5))

    def keys() -> set[str]:
        with world.db() as db:
            return set(db.scalars(sa.select(LoginThrottle.key)))

    assert len(keys()) == 62
    factory = world.app.extensions["cryofac.sessionmaker"]
    use_display_zone(UTC)  # (requests of the test client leave theirs set in this thread)
    report = Worker(
        factory, None, WorkerOptions(evaluate_alarms=False, login_policy=policy)
    ).run_once()
    assert report.throttle_pruned == 60
    assert display_zone() is UTC  # the jobs' facility zone did not leak out of them
    assert keys() == {"user:alice", "addr:10.9.9.9"}
    # a shorter window (the option) prunes the recent ones too
    short = WorkerOptions(evaluate_alarms=False, login_policy=LoginPolicy(forget_after_min=1))
    assert Worker(factory, None, short).run_once().throttle_pruned == 2
    assert keys() == set()
