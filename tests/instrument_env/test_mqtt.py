"""MQTT end to end against the real broker on 127.0.0.1:1883 (Mosquitto, as in CI)."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from instrument_env.db import session_factory
from instrument_env.models import Reading, to_us
from instrument_env.mqtt import (
    BrokerOptions,
    MalformedMessage,
    Subscriber,
    parse_message,
    publish_raw,
    publish_readings,
)
from instrument_env.sim import EnvSimulator

HOST, PORT = "127.0.0.1", 1883
T = datetime(2026, 3, 3, 6, 0, tzinfo=UTC)


def shared_broker_options() -> BrokerOptions:
    """The shared broker, with a client id of this test's own and a session that ends
    with the connection (the shared broker must not keep queues for finished tests)."""
    return BrokerOptions(
        host=HOST, port=PORT, client_id=f"cryofac-test-{uuid.uuid4().hex[:12]}", session_expiry_s=0
    )


@pytest.fixture
def broker():
    try:
        socket.create_connection((HOST, PORT), timeout=2).close()
    except OSError as exc:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"MQTT broker unreachable at {HOST}:{PORT}: {exc} (CI=true)")
        pytest.skip(f"MQTT broker unreachable at {HOST}:{PORT}")
    return HOST, PORT


def test_parse_message_reasons(env_config):
    ok = parse_message("cryofac/env/krios-room/krios-t1", b'{"quantity":"temperature"}', env_config)
    assert ok.readings == [{"quantity": "temperature", "sensor": "krios-t1"}]
    cases = {
        ("cryofac/env/krios-t1", b"{}"): "is not cryofac/env/ROOM/SENSOR",
        ("cryofac/env/krios-room/ghost", b"{}"): "unknown sensor 'ghost'",
        ("cryofac/env/prep-lab/krios-t1", b"{}"): "is in room 'krios-room'",
        ("cryofac/env/krios-room/krios-t1", b"{nope"): "not JSON",
        ("cryofac/env/krios-room/krios-t1", b"[1, 2]"): "object or a list of objects",
    }
    for (topic, payload), reason in cases.items():
        with pytest.raises(MalformedMessage, match=reason):
            parse_message(topic, payload, env_config)


def test_simulator_readings_land_in_db_malformed_skipped(broker, env_engine, env_config, caplog):
    caplog.set_level("WARNING", logger="instrument_env.mqtt")
    sessions = session_factory(env_engine)
    subscriber = Subscriber(
        sessions,
        broker=shared_broker_options(),
        config=env_config,
        batch_size=500,
        flush_interval_s=0.2,
    )
    stop, thread = _running(subscriber)
    sim = EnvSimulator(env_config, seed=1, rooms=["krios-room"])
    start, end = T, T + timedelta(minutes=10)
    batches = list(sim.batches(start, end))
    expected = sum(len(b) for b in batches)
    half = len(batches) // 2
    publish_readings(batches[:half], host=HOST, port=PORT, config=env_config)
    # malformed messages in the middle of the stream
    publish_raw("cryofac/env/krios-room/krios-t1", b"{not json", host=HOST, port=PORT)
    publish_raw("cryofac/env/krios-room/ghost-sensor", b"{}", host=HOST, port=PORT)
    publish_raw(
        "cryofac/env/krios-room/krios-t1",
        b'{"quantity": "temperature", "ts": "2026-03-03T06:00:05+00:00", "value": 20, "unit": "K"}',
        host=HOST,
        port=PORT,
    )
    publish_readings(batches[half:], host=HOST, port=PORT, config=env_config)

    def stored():
        with sessions() as session:
            return session.execute(
                sa.select(sa.func.count())
                .select_from(Reading)
                .where(Reading.ts_us >= to_us(start), Reading.ts_us < to_us(end))
                .where(Reading.band != "max")  # derived at ingest, not published
            ).scalar()

    _wait_then_stop(stored, expected, stop, thread)
    assert subscriber.stats.malformed >= 2
    assert subscriber.stats.rejected >= 1  # the reading in kelvin
    assert subscriber.stats.errors == []
    logged = [r.getMessage() for r in caplog.records if r.name == "instrument_env.mqtt"]
    assert any("skipped malformed message" in m and "not JSON" in m for m in logged)
    assert any("unknown sensor 'ghost-sensor'" in m for m in logged)
    assert any("rejected reading from krios-t1: unit 'K'" in m for m in logged)
    assert not thread.is_alive()


def test_raw_samples_over_mqtt_are_reduced(broker, env_engine, env_config):
    sessions = session_factory(env_engine)
    subscriber = Subscriber(
        sessions, broker=shared_broker_options(), config=env_config, flush_interval_s=0.2
    )
    stop, thread = _running(subscriber)
    start = T + timedelta(hours=1)
    sim = EnvSimulator(env_config, seed=2, rooms=["krios-room"], raw=True)
    publish_readings(
        sim.batches(start, start + timedelta(seconds=30)), host=HOST, port=PORT, config=env_config
    )

    def count(sensor, quantity):
        with sessions() as session:
            return session.execute(
                sa.select(sa.func.count())
                .select_from(Reading)
                .where(Reading.sensor == sensor, Reading.quantity == quantity)
                .where(Reading.ts_us >= to_us(start), Reading.ts_us < to_us(start) + 30_000_000)
            ).scalar()

    deadline = time.monotonic() + 30
    while count("krios-vib", "vibration") < 3 * 21 and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    thread.join(10)
    assert count("krios-vib", "vibration") == 3 * 21  # 20 bands + max, 3 times
    assert count("krios-mag", "magnetic_field_ac") == 3
    assert count("krios-mag", "magnetic_field_dc") == 3
    assert subscriber.stats.errors == []


def test_database_outage_is_retried_without_losing_readings(broker, env_engine, env_config):
    real = session_factory(env_engine)
    failures = {"left": 2}

    def flaky_sessions():
        if failures["left"]:
            failures["left"] -= 1
            raise sa.exc.OperationalError("connect", {}, Exception("database is down"))
        return real()

    subscriber = Subscriber(
        flaky_sessions, broker=shared_broker_options(), config=env_config, flush_interval_s=0.1
    )
    stop, thread = _running(subscriber)
    start = T + timedelta(hours=2)
    sim = EnvSimulator(env_config, seed=3, rooms=["screening-room"])
    batches = list(sim.batches(start, start + timedelta(minutes=2)))
    expected = sum(len(b) for b in batches)
    publish_readings(batches, host=HOST, port=PORT, config=env_config)

    def stored():
        with real() as session:
            return session.execute(
                sa.select(sa.func.count())
                .select_from(Reading)
                .where(Reading.sensor.like("screen-%"), Reading.band != "max")
                .where(Reading.ts_us >= to_us(start), Reading.ts_us < to_us(start) + 120_000_000)
            ).scalar()

    _wait_then_stop(stored, expected, stop, thread)
    assert len(subscriber.stats.errors) == 2 and subscriber.stats.dropped == 0


def _wait_then_stop(stored, expected: int, stop, thread) -> None:
    """Wait (30 s at most) until ``stored()`` reaches ``expected``, stop the subscriber's
    thread, and check the count is exactly ``expected``."""
    deadline = time.monotonic() + 30
    while stored() < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    thread.join(10)
    assert stored() == expected


def _running(subscriber: Subscriber) -> tuple[threading.Event, threading.Thread]:
    """Run ``subscriber`` in a daemon thread until the returned event is set; return once it
    has subscribed (10 s at most)."""
    stop = threading.Event()
    thread = threading.Thread(target=lambda: subscriber.run(stop=stop), daemon=True)
    thread.start()
    assert subscriber.subscribed.wait(10), "subscriber did not subscribe"
    return stop, thread
