"""MQTT in and out: the subscriber process that batches readings into the database, and
a publisher used by the simulator.

Topic ``cryofac/env/ROOM/SENSOR``; payload JSON, one reading
``{"quantity", "ts", "value", "unit"[, "band"]}`` or a list of them (CONTRACT.md).
A malformed message (bad topic, unknown sensor, sensor in another room, invalid JSON,
wrong shape) is logged and skipped; the subscriber keeps running. Readings within a
well-formed message are validated one by one by :func:`ingest_readings` (bad ones are
logged with their reason, the rest stored).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from cryofac.errors import CryofacError
from instrument_env.limits import EnvConfig, load_env_config

log = logging.getLogger(__name__)
TOPIC_PREFIX = "cryofac/env"


class MalformedMessage(ValueError):
    """An MQTT message that cannot be turned into readings (logged and skipped)."""


class BrokerUnavailable(CryofacError):
    """The MQTT broker could not be reached."""


def topic_for(room: str, sensor: str) -> str:
    return f"{TOPIC_PREFIX}/{room}/{sensor}"


def parse_message(topic: str, payload: bytes, config: EnvConfig) -> list[dict]:
    """Readings (with ``sensor`` filled in from the topic) from one MQTT message."""
    parts = topic.split("/")
    if len(parts) != 4 or "/".join(parts[:2]) != TOPIC_PREFIX:
        raise MalformedMessage(f"topic {topic!r} is not {TOPIC_PREFIX}/ROOM/SENSOR")
    room, sensor_id = parts[2], parts[3]
    sensor = config.sensors.get(sensor_id)
    if sensor is None:
        raise MalformedMessage(f"topic {topic!r}: unknown sensor {sensor_id!r}")
    if sensor.room != room:
        raise MalformedMessage(f"topic {topic!r}: sensor {sensor_id!r} is in room {sensor.room!r}")
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessage(f"topic {topic!r}: payload is not JSON ({exc})") from None
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(item, dict) for item in items):
        raise MalformedMessage(f"topic {topic!r}: payload must be an object or a list of objects")
    return [{**item, "sensor": sensor_id} for item in items]


@dataclass
class SubscriberStats:
    messages: int = 0
    malformed: int = 0
    accepted: int = 0
    rejected: int = 0
    flushes: int = 0
    dropped: int = 0
    errors: list[str] = field(default_factory=list)


class Subscriber:
    """Subscribe to ``cryofac/env/#`` and write readings to the database in batches.

    Messages are parsed on paho's network thread and queued; the thread that calls
    :meth:`run` writes a batch whenever ``batch_size`` readings are waiting or
    ``flush_interval_s`` has passed, and evaluates alarms every ``evaluate_every_s``
    (when given). A failed write (database down) keeps its readings and is retried with
    exponential back-off; at most ``max_buffer`` readings are kept meanwhile.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        config: EnvConfig | None = None,
        batch_size: int = 1000,
        flush_interval_s: float = 1.0,
        evaluate_every_s: float | None = None,
        client_id: str | None = None,
        now: Callable[[], datetime] | None = None,
        max_buffer: int = 1_000_000,
    ):
        self.max_buffer = max_buffer
        self.sessions = sessions
        self.host, self.port = host, port
        self.config = config or load_env_config()
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.evaluate_every_s = evaluate_every_s
        self.client_id = client_id or f"cryofac-env-{uuid.uuid4().hex[:8]}"
        self.now = now
        self.stats = SubscriberStats()
        self.subscribed = threading.Event()
        self._queue: queue.Queue[list[dict]] = queue.Queue()

    # paho callbacks (network thread) -------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if getattr(reason_code, "is_failure", False):
            log.error("MQTT connect refused: %s", reason_code)
            return
        client.subscribe(f"{TOPIC_PREFIX}/#", qos=1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties=None):
        self.subscribed.set()

    def _on_message(self, client, userdata, message):
        self.stats.messages += 1
        try:
            readings = parse_message(message.topic, message.payload, self.config)
        except MalformedMessage as exc:
            self.stats.malformed += 1
            log.warning("skipped malformed message: %s", exc)
            return
        self._queue.put(readings)

    # writer (caller's thread) ------------------------------------------------
    def _drain(self) -> list[dict]:
        batch: list[dict] = []
        while True:
            try:
                batch.extend(self._queue.get_nowait())
            except queue.Empty:
                return batch

    def flush(self, batch: list[dict]) -> None:
        from instrument_env.ingest import ingest_readings

        if not batch:
            return
        with self.sessions() as session:
            now = self.now() if self.now else None
            result = ingest_readings(session, batch, source="mqtt", config=self.config, now=now)
            session.commit()
        self.stats.flushes += 1
        self.stats.accepted += result.accepted
        self.stats.rejected += len(result.rejected)
        for item in result.rejected[:20]:
            reading = batch[item["index"]]
            log.warning("rejected reading from %s: %s", reading.get("sensor", "?"), item["reason"])

    def evaluate_alarms(self) -> None:
        from instrument_env.alarms import evaluate
        from instrument_env.models import now_utc

        with self.sessions() as session:
            evaluate(session, self.now() if self.now else now_utc(), self.config)
            session.commit()

    def run(
        self,
        *,
        stop: threading.Event | None = None,
        duration_s: float | None = None,
        max_readings: int | None = None,
    ) -> SubscriberStats:
        """Run until ``stop`` is set, ``duration_s`` passed or ``max_readings`` stored."""
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        try:
            client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise BrokerUnavailable(
                f"cannot reach the MQTT broker at {self.host}:{self.port} ({exc})"
            ) from None
        client.loop_start()
        stop = stop or threading.Event()
        started = last_flush = last_eval = time.monotonic()
        retry_at, backoff = 0.0, 0.5
        pending: list[dict] = []
        try:
            while not stop.is_set():
                pending.extend(self._drain())
                now = time.monotonic()
                if now >= retry_at and (
                    len(pending) >= self.batch_size
                    or (pending and now - last_flush >= self.flush_interval_s)
                ):
                    if self._safe_flush(pending):
                        pending, last_flush, backoff = [], now, 0.5
                    else:  # keep the readings and retry: the broker will not resend them
                        retry_at, backoff = now + backoff, min(backoff * 2, 30.0)
                        pending = self._cap(pending)
                if self.evaluate_every_s and now - last_eval >= self.evaluate_every_s:
                    self._safe(self.evaluate_alarms)
                    last_eval = now
                if duration_s is not None and now - started >= duration_s:
                    break
                if max_readings is not None and self.stats.accepted >= max_readings:
                    break
                time.sleep(0.02)
        finally:
            client.disconnect()
            client.loop_stop()
            pending.extend(self._drain())
            self._safe_flush(pending)
        return self.stats

    def _safe_flush(self, batch: list[dict]) -> bool:
        return self._safe(lambda: self.flush(batch))

    def _cap(self, pending: list[dict]) -> list[dict]:
        """Bound the retry buffer; the oldest readings go first (and are counted)."""
        excess = len(pending) - self.max_buffer
        if excess > 0:
            self.stats.dropped += excess
            log.error("retry buffer full: dropped the %d oldest readings", excess)
            return pending[excess:]
        return pending

    def _safe(self, action: Callable[[], None]) -> bool:
        try:
            action()
        except Exception as exc:  # keep the subscriber alive
            log.error(
                "database write failed: %s: %s",
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
            )
            log.debug("database write failure", exc_info=True)
            self.stats.errors.append(f"{exc.__class__.__name__}: {exc}")
            return False
        return True


def publish_readings(
    batches: Iterable[list[dict]],
    *,
    host: str = "127.0.0.1",
    port: int = 1883,
    config: EnvConfig | None = None,
    qos: int = 1,
    pace: Callable[[list[dict]], None] | None = None,
) -> int:
    """Publish readings, one message per sensor per batch; returns readings published."""
    import paho.mqtt.client as mqtt

    config = config or load_env_config()
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"cryofac-sim-{uuid.uuid4().hex[:8]}"
    )
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        raise BrokerUnavailable(f"cannot reach the MQTT broker at {host}:{port} ({exc})") from None
    client.loop_start()
    count = 0
    infos = []
    try:
        for batch in batches:
            if pace is not None:
                pace(batch)
            per_sensor: dict[str, list[dict]] = {}
            for reading in batch:
                item = {k: v for k, v in reading.items() if k != "sensor"}
                per_sensor.setdefault(reading["sensor"], []).append(item)
            for sensor_id, items in per_sensor.items():
                room = config.sensors[sensor_id].room
                infos.append(client.publish(topic_for(room, sensor_id), json.dumps(items), qos=qos))
                count += len(items)
            for info in infos:
                info.wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()
    return count


def publish_raw(
    topic: str, payload: bytes | str, *, host: str = "127.0.0.1", port: int = 1883
) -> None:
    """Publish one message as is (used to test how malformed messages are handled)."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect(host, port, keepalive=30)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()
