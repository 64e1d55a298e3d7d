"""Fault injection on MQTT ingest, each test on its own Mosquitto (free port, persistence in
a temporary folder, the lossless settings of ``cryofac/config/mosquitto.conf``).

- kill -9 of the ``cryofac env mqtt`` process mid-stream: nothing the broker accepted is lost;
- a broker restart mid-stream: nothing lost;
- poison messages (deep nesting, NUL, non-UTF-8, oversized, a row the database refuses):
  refused with a reason, acknowledged (not redelivered), later readings stored;
- the session, QoS, credential and TLS options change what happens.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from cryofac.config import PACKAGE_DIR
from instrument_env.db import session_factory
from instrument_env.models import RejectedReading
from instrument_env.mosquitto import LocalBroker, child_env, ingester_argv, spawn_ingester
from instrument_env.mqtt import (
    BatchOptions,
    BrokerOptions,
    BrokerRefused,
    MalformedMessage,
    PayloadLimits,
    Subscriber,
    parse_message,
    publish_raw,
    publish_readings,
)
from instrument_env.mqtt_payload import json_depth

SOURCE_ROOT = PACKAGE_DIR.parent.parent  # this checkout, for child processes

#: Channels the streams cycle through (sensor, quantity, level, unit).
CHANNELS = [
    ("krios-t1", "temperature", 20.0, "°C"),
    ("krios-t1", "humidity", 45.0, "%RH"),
    ("krios-t2", "temperature", 20.1, "°C"),
    ("screen-t1", "temperature", 20.2, "°C"),
    ("screen-t1", "humidity", 44.0, "%RH"),
    ("prep-t1", "temperature", 20.3, "°C"),
]


def stream(n: int, start: datetime, per_message: int = 1) -> list[dict]:
    """``n`` distinct, plausible readings, 1 s apart, in runs of ``per_message`` of one
    channel (what one logger message holds), cycling through :data:`CHANNELS`."""
    out = []
    for i in range(n):
        sensor, quantity, level, unit = CHANNELS[(i // per_message) % len(CHANNELS)]
        ts = start + timedelta(seconds=i)
        value = round(level + 0.05 * math.sin(i / 50.0), 4)
        out.append(
            {
                "sensor": sensor,
                "quantity": quantity,
                "ts": ts.isoformat(),
                "value": value,
                "unit": unit,
            }
        )
    return out


def messages(readings: list[dict], per_message: int) -> list[list[dict]]:
    """Consecutive runs of ``per_message`` readings: one MQTT message each."""
    return [readings[i : i + per_message] for i in range(0, len(readings), per_message)]


def recent(minutes: float = 120.0) -> datetime:
    """A start time in the recent past (readings must be neither future nor stale)."""
    return (datetime.now(UTC) - timedelta(minutes=minutes)).replace(microsecond=0)


def stored_keys(sessions) -> set[tuple]:
    with sessions() as session:
        rows = session.execute(
            sa.text("SELECT sensor, quantity, ts_us FROM env_readings WHERE band = ''")
        ).all()
    return {tuple(r) for r in rows}


def keys_of(readings: list[dict]) -> set[tuple]:
    return {
        (r["sensor"], r["quantity"], int(round(datetime.fromisoformat(r["ts"]).timestamp() * 1e6)))
        for r in readings
    }


def wait_until(predicate, timeout_s: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def broker(tmp_path):
    server = LocalBroker(tmp_path / "broker").start()
    yield server
    server.stop()


class Ingester:
    """``cryofac env mqtt`` as a separate process (killable with -9)."""

    def __init__(self, url: str, port: int, *extra: str):
        self.args = (url, port, "cryofac-test-ingest", *extra)
        self.process: subprocess.Popen | None = None

    def start(self) -> Ingester:
        self.process = spawn_ingester(*self.args, source_root=SOURCE_ROOT)
        return self

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=60)
        return out


def paced_publisher(broker_port: int, batches, at_fraction: float, reached, resume):
    """A thread publishing ``batches`` (one message each) at QoS 1 as fast as it can; when
    ``at_fraction`` of them are sent it sets ``reached`` and waits for ``resume``."""
    mark = int(len(batches) * at_fraction)
    sent = {"n": 0}

    def pace(batch):
        if sent["n"] == mark:
            reached.set()
            assert resume.wait(60)
        sent["n"] += 1

    result = {}

    def body():
        result["count"] = publish_readings(batches, port=broker_port, pace=pace, timeout_s=120)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, result


@pytest.mark.slow
def test_kill_9_of_the_ingester_mid_stream_loses_nothing(broker, database_url, env_engine):
    sessions = session_factory(env_engine)
    readings = stream(12_000, recent(240), per_message=6)  # 2,000 messages
    ingester = Ingester(database_url, broker.port).start()
    reached, resume = threading.Event(), threading.Event()
    thread, result = paced_publisher(broker.port, messages(readings, 6), 0.4, reached, resume)
    assert reached.wait(60)
    ingester.kill9()  # mid-stream: 40 % sent, some committed, some received and unacknowledged
    at_kill = len(stored_keys(sessions))
    resume.set()  # the rest is published while no ingester runs: the broker queues it
    thread.join(120)
    assert result["count"] == len(readings)  # every message acknowledged by the broker
    ingester = Ingester(database_url, broker.port).start()
    expected = keys_of(readings)
    wait_until(lambda: stored_keys(sessions) >= expected, what="all readings stored")
    summary = ingester.stop()
    assert at_kill < len(readings)
    assert stored_keys(sessions) == expected  # 0 lost, nothing extra
    assert "readings stored" in summary


@pytest.mark.slow
def test_broker_restart_mid_stream_loses_nothing(broker, database_url, env_engine):
    sessions = session_factory(env_engine)
    readings = stream(6_000, recent(240), per_message=3)  # 2,000 messages
    subscriber = Subscriber(
        sessions,
        broker=BrokerOptions(port=broker.port, client_id="restart-test", reconnect_max_s=1),
    )
    stop = threading.Event()
    runner = threading.Thread(target=lambda: subscriber.run(stop=stop), daemon=True)
    subscriber.start()
    runner.start()
    reached, resume = threading.Event(), threading.Event()
    thread, result = paced_publisher(broker.port, messages(readings, 3), 0.4, reached, resume)
    assert reached.wait(60)
    broker.restart()  # SIGTERM (the queue is saved), then the same port again
    resume.set()
    thread.join(120)
    assert result["count"] == len(readings)
    expected = keys_of(readings)
    wait_until(lambda: stored_keys(sessions) >= expected, what="all readings stored")
    stop.set()
    runner.join(30)
    assert stored_keys(sessions) == expected
    assert subscriber.stats.connects >= 2  # it did reconnect to the restarted broker


def _refuse_value_in_database(engine, value: float | None) -> None:
    """Make the database itself refuse rows with ``value`` (None: every row), a data
    error (integrity), not an outage."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            when = f"NEW.value = {value}" if value is not None else "1"
            conn.execute(
                sa.text(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT ON env_readings "
                    f"WHEN {when} BEGIN SELECT RAISE(ABORT, 'poison row'); END"
                )
            )
        else:
            check = f"value <> {value}" if value is not None else "value < -1e300"
            conn.execute(
                sa.text(f"ALTER TABLE env_readings ADD CONSTRAINT refuse_poison CHECK ({check})")
            )


def _accept_again(engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(sa.text("DROP TRIGGER refuse_poison"))
        else:
            conn.execute(sa.text("ALTER TABLE env_readings DROP CONSTRAINT refuse_poison"))


def test_a_database_that_refuses_every_row_drops_nothing(broker, database_url, env_engine):
    sessions = session_factory(env_engine)
    _refuse_value_in_database(env_engine, None)
    subscriber = Subscriber(
        sessions,
        broker=BrokerOptions(port=broker.port, client_id="refuse-all"),
        batching=BatchOptions(retry_max_s=0.5),
    )
    subscriber.start()
    stop = threading.Event()
    runner = threading.Thread(target=lambda: subscriber.run(stop=stop), daemon=True)
    runner.start()
    readings = stream(60, recent(), per_message=3)
    publish_readings(messages(readings, 3), port=broker.port)
    wait_until(lambda: len(subscriber.stats.errors) >= 2, what="failed commits")
    assert stored_keys(sessions) == set() and subscriber.stats.acked == 0
    _accept_again(env_engine)
    wait_until(lambda: keys_of(readings) <= stored_keys(sessions), what="readings stored")
    stop.set()
    runner.join(30)
    assert subscriber.stats.poison == 0 and subscriber.stats.acked == 20


DEEP = b"[" * 50_000 + b"]" * 50_000  # 100 kB, nested 50,000 deep


@pytest.mark.slow
def test_poison_messages_are_refused_acknowledged_and_ingest_goes_on(
    broker, database_url, env_engine, caplog
):
    caplog.set_level("WARNING", logger="instrument_env.mqtt")
    sessions = session_factory(env_engine)
    _refuse_value_in_database(env_engine, 21.2345)
    start = recent()
    before, after = stream(60, start), stream(120, start + timedelta(minutes=30))
    options = BrokerOptions(port=broker.port, client_id="poison-test")
    topic = "cryofac/env/krios-room/krios-t1"
    t = (start + timedelta(minutes=20)).isoformat()
    nul_band = {"quantity": "humidity", "ts": t, "value": 45.0, "unit": "%RH", "band": "a\u0000"}
    refused_row = {"quantity": "temperature", "ts": t, "value": 21.2345, "unit": "°C"}
    neighbours = stream(2, start + timedelta(minutes=40))  # krios-t1, in one message
    items = [{k: v for k, v in r.items() if k != "sensor"} for r in neighbours]
    subscriber = Subscriber(sessions, broker=options, batching=BatchOptions(idle_flush_s=0.5))
    stop = threading.Event()
    subscriber.start()
    runner = threading.Thread(target=lambda: subscriber.run(stop=stop), daemon=True)
    runner.start()
    publish_readings([before], port=broker.port)
    for payload in (
        DEEP,
        json.dumps([nul_band]).encode(),
        b'{"quantity": "temperature", "value": 20, "unit": "\xff\xfe"}',
        b"[" + b'{"quantity": "temperature"},' * 60_000 + b"{}]",  # 1.7 MB
        json.dumps([items[0], refused_row, items[1]]).encode(),
    ):
        publish_raw(topic, payload, port=broker.port)
    publish_readings([after], port=broker.port)
    expected = keys_of(before + after + neighbours)
    wait_until(lambda: stored_keys(sessions) >= expected, what="later readings stored")
    stop.set()
    runner.join(30)
    assert stored_keys(sessions) == expected
    stats = subscriber.stats
    assert stats.malformed == 3 and stats.poison == 1 and stats.refused == 1
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "nested 50000 deep (limit 8)" in logged
    assert "contains control characters" in logged
    assert "payload is not UTF-8 (byte 0xff" in logged
    assert "over the limit of 1048576 bytes" in logged
    assert "cannot be stored" in logged and ("refuse_poison" in logged or "poison row" in logged)
    # the refused readings are kept with their reason, not only logged
    with sessions() as session:
        kept = session.execute(
            sa.select(RejectedReading.sensor, RejectedReading.reason, RejectedReading.payload)
            .where(RejectedReading.source == "mqtt")
            .order_by(RejectedReading.id)
        ).all()
    assert [(sensor, reason) for sensor, reason, _ in kept][0] == (
        "krios-t1",
        "band 'a\\x00' contains control characters",
    )
    assert '"band": "a\\u0000"' in kept[0].payload
    assert kept[1].reason.startswith("cannot be stored (") and "21.2345" in kept[1].payload

    # Every one of them was acknowledged: the same session gets none of them again.
    again = Subscriber(sessions, broker=options)
    again.start()
    sentinel = stream(1, start + timedelta(minutes=50))
    publish_readings([sentinel], port=broker.port)
    done = threading.Event()
    threading.Thread(target=lambda: again.run(stop=done, max_readings=1), daemon=True).start()
    wait_until(lambda: again.stats.accepted >= 1, what="the sentinel")
    done.set()
    assert again.stats.messages == 1


def test_payload_limits_apply_before_parsing(env_config):
    topic = "cryofac/env/krios-room/krios-t1"
    ok = b'[{"quantity": "temperature", "ts": 1, "value": 20, "unit": "\\u00b0C", "band": "[[["}]'
    assert json_depth(ok) == 2  # brackets inside strings do not count
    assert len(parse_message(topic, ok, env_config).readings) == 1
    with pytest.raises(MalformedMessage, match="nested 50000 deep"):
        parse_message(topic, DEEP, env_config)
    nested = b'[{"raw": {"samples": [[1, 2], [3, 4]]}}]'
    assert len(parse_message(topic, nested, env_config, PayloadLimits(max_depth=5)).readings) == 1
    with pytest.raises(MalformedMessage, match="nested 5 deep .limit 4."):
        parse_message(topic, nested, env_config, PayloadLimits(max_depth=4))
    with pytest.raises(MalformedMessage, match="over the limit of 50 bytes"):
        parse_message(topic, ok, env_config, PayloadLimits(max_bytes=50))
    parsed = parse_message(
        topic,
        b'[{"quantity": "temperature", "unit": "x\\u0000"}, {"quantity": "humidity"}]',
        env_config,
    )
    assert [r["quantity"] for r in parsed.readings] == ["humidity"]
    assert parsed.refused == [(0, "unit 'x\\x00' contains control characters")]
    with pytest.raises(MalformedMessage, match="not UTF-8"):
        parse_message(topic, b'{"unit": "\xc3"}', env_config)
    with pytest.raises(MalformedMessage, match="topic .* is not UTF-8"):
        parse_message(b"cryofac/env/\xff/krios-t1", b"{}", env_config)


@pytest.mark.parametrize(
    ("options", "kept"),
    [
        ({}, True),  # persistent session, QoS 1: queued while away
        ({"protocol": "3.1.1"}, True),  # clean_session false
        ({"qos": 0}, False),
        ({"session_expiry_s": 0}, False),  # the session ends with the connection
    ],
    ids=["default", "mqtt311", "qos0", "no-session-expiry"],
)
def test_session_options_decide_what_is_kept_while_away(broker, tmp_path, options, kept):
    from instrument_env.db import make_engine, upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'env.sqlite3'}")
    upgrade(engine)
    sessions = session_factory(engine)
    broker_options = BrokerOptions(port=broker.port, client_id="away-test", **options)
    first = Subscriber(sessions, broker=broker_options)
    first.start()
    first.run(duration_s=0)  # connect, subscribe, leave (cleanly)
    away = stream(50, recent())
    publish_readings([away], port=broker.port)  # one message while no subscriber runs
    second = Subscriber(sessions, broker=broker_options)
    second.start()
    sentinel = stream(1, recent(30))
    publish_readings([sentinel], port=broker.port)
    stop = threading.Event()
    threading.Thread(target=lambda: second.run(stop=stop), daemon=True).start()
    wait_until(lambda: keys_of(sentinel) <= stored_keys(sessions), what="the sentinel")
    stop.set()
    assert (keys_of(away) <= stored_keys(sessions)) is kept
    engine.dispose()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def secure_broker(tmp_path):
    """A broker with a password file and a TLS listener (self-signed CA)."""
    if subprocess.run(["which", "openssl"], capture_output=True).returncode:
        pytest.skip("openssl is not installed")
    certs = tmp_path / "certs"
    certs.mkdir()
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        cwd=certs,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        cwd=certs,
    )
    (certs / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
        cwd=certs,
    )
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "ingest", "s3cret"], check=True)
    tls = {"ca": certs / "ca.crt", "cert": certs / "server.crt", "key": certs / "server.key"}
    server = LocalBroker(tmp_path / "broker", password_file=passwd, tls=tls).start()
    yield server, certs / "ca.crt"
    server.stop()


@pytest.mark.slow
def test_password_and_tls_options(secure_broker, tmp_path):
    from instrument_env.db import make_engine, upgrade

    server, ca = secure_broker
    url = f"sqlite:///{tmp_path / 'env.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine)
    sessions = session_factory(engine)
    good = BrokerOptions(port=server.tls_port, username="ingest", password="s3cret", tls_ca=str(ca))
    with pytest.raises(BrokerRefused, match="refused the connection"):
        Subscriber(
            sessions, broker=BrokerOptions(port=server.port, username="ingest", password="nope")
        ).start()
    with pytest.raises(BrokerRefused, match="refused the connection"):
        Subscriber(sessions, broker=BrokerOptions(port=server.port)).start()  # anonymous
    # The CLI: password from a file, TLS with the facility's CA.
    password_file = tmp_path / "mqtt-password"
    password_file.write_text("s3cret\n")
    cli = ("--username", "ingest", "--password-file", str(password_file), "--tls-ca", str(ca))
    ingester = Ingester(url, server.tls_port, *cli).start()
    readings = stream(30, recent())
    publish_readings([readings], broker=good)
    wait_until(lambda: keys_of(readings) <= stored_keys(sessions), what="readings over TLS")
    ingester.stop()
    # Wrong password through the CLI: one line, exit status 1, no traceback.
    password_file.write_text("wrong\n")
    done = subprocess.run(
        ingester_argv(url, server.tls_port, "cryofac-test-ingest", *cli),
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(SOURCE_ROOT),
    )
    assert done.returncode == 1
    assert "refused the connection" in done.stderr and "Traceback" not in done.stderr
    engine.dispose()


def test_share_group_splits_messages_between_ingesters(broker, tmp_path):
    from instrument_env.db import make_engine, upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'env.sqlite3'}")
    upgrade(engine)
    sessions = session_factory(engine)
    subscribers = [
        Subscriber(
            sessions,
            broker=BrokerOptions(port=broker.port, client_id=f"member-{i}", share_group="ingest"),
        )
        for i in range(2)
    ]
    stop = threading.Event()
    for subscriber in subscribers:
        subscriber.start()
        threading.Thread(target=lambda s=subscriber: s.run(stop=stop), daemon=True).start()
    readings = stream(200, recent(), per_message=5)
    publish_readings(messages(readings, 5), port=broker.port)
    wait_until(lambda: keys_of(readings) <= stored_keys(sessions), what="all readings")
    stop.set()
    counts = [s.stats.messages for s in subscribers]
    assert sum(counts) == 40 and min(counts) > 0  # each message once, both members busy
    engine.dispose()
