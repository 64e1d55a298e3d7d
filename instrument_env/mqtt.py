"""MQTT ingest: the subscriber process that commits readings in batches.

Delivery is *at least once*, end to end:

- The subscriber keeps a **persistent session** on the broker: a fixed client id
  (:attr:`BrokerOptions.client_id`) with MQTT 5 ``clean_start=False`` and a session
  expiry (or MQTT 3.1.1 ``clean_session=False``), subscribed at QoS 1. While it is down
  the broker queues its messages; nothing depends on the subscriber's memory.
- Messages are **acknowledged by hand** (paho-mqtt 2 ``manual_ack``), and only after the
  batch that holds them is committed to the database. A ``kill -9`` between receipt and
  commit leaves the messages unacknowledged; the broker sends them again on reconnect,
  and storing a reading twice is a no-op (the readings' primary key).
- Commits are batched: at most :attr:`BatchOptions.batch_size` readings, at most
  :attr:`BatchOptions.flush_interval_s` after the oldest waiting message arrived, or as
  soon as the broker pauses for :attr:`BatchOptions.idle_flush_s` (the broker sends no
  more than its in-flight limit of unacknowledged messages, so a pause can mean it is
  waiting for acknowledgements).
- A message that can never be stored (size or nesting over :class:`PayloadLimits`, not
  UTF-8, not JSON, wrong topic ...) is logged with its reason and acknowledged, so it is
  not delivered forever; its valid neighbours are stored. Readings are validated one by
  one by :func:`~instrument_env.ingest.ingest_readings`.
- A database error that concerns the data (not the connection) is isolated by halving
  the batch (by message, then within a message): every reading that can be committed
  is, and a reading that fails on its own while others of the same flush were committed
  is logged and dropped (its message acknowledged). A
  connection-level error (database down, locked, disk full) keeps every message
  unacknowledged and retries with back-off; the broker's in-flight limit bounds memory.
- No exception escapes a paho callback, so paho's network thread never dies.

The broker must persist its queue and must not cap it: see ``cryofac/config/mosquitto.conf``
(``persistence true``, ``max_queued_messages 0``, ``max_inflight_messages``).
QoS 2 is not offered: paho answers a QoS 2 message (PUBREC) before the application sees
it, so a crash at that moment would lose it.

Broker options and the paho client: :mod:`instrument_env.mqtt_client`; payload limits
and parsing: :mod:`instrument_env.mqtt_payload`; publishers (re-exported here):
:mod:`instrument_env.mqtt_publish`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from instrument_env.limits import EnvConfig, load_env_config
from instrument_env.mqtt_client import (
    BrokerOptions,
    BrokerRefused,
    BrokerUnavailable,
    _connect,
    make_client,
)
from instrument_env.mqtt_payload import (
    TOPIC_PREFIX,
    MalformedMessage,
    ParsedMessage,
    PayloadLimits,
    parse_message,
    topic_for,
)
from instrument_env.mqtt_publish import publish_raw, publish_readings

__all__ = [
    "TOPIC_PREFIX",
    "BatchOptions",
    "BrokerOptions",
    "BrokerRefused",
    "BrokerUnavailable",
    "MalformedMessage",
    "PayloadLimits",
    "Subscriber",
    "SubscriberStats",
    "parse_message",
    "publish_raw",
    "publish_readings",
    "topic_for",
]

log = logging.getLogger(__name__)
#: Failed commits in a row, while isolating bad readings, after which the database
#: (not the data) is taken to be at fault: nothing is dropped, the batch is retried.
MAX_FAILED_COMMITS = 64


@dataclass(frozen=True)
class BatchOptions:
    """When the subscriber commits: ``batch_size`` readings (or messages) waiting, the
    oldest waiting for ``flush_interval_s`` seconds, or no message for ``idle_flush_s``
    seconds. ``retry_max_s``: longest back-off between retries of a failed commit."""

    batch_size: int = 20_000
    flush_interval_s: float = 1.0
    idle_flush_s: float = 0.05
    retry_max_s: float = 10.0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.flush_interval_s <= 0 or self.idle_flush_s <= 0:
            raise ValueError("batch_size, flush_interval_s and idle_flush_s must be positive")


@dataclass
class SubscriberStats:
    messages: int = 0
    malformed: int = 0
    accepted: int = 0
    rejected: int = 0  # readings refused by validation (writer thread)
    refused: int = 0  # readings refused at the edge: control characters (network thread)
    flushes: int = 0
    acked: int = 0
    poison: int = 0
    connects: int = 0
    dropped: int = 0  # kept for callers of the old buffer-dropping subscriber: always 0
    errors: list[str] = field(default_factory=list)


@dataclass
class _Delivery:
    """One received message, waiting for its commit and acknowledgement."""

    mid: int
    qos: int
    generation: int
    topic: bytes
    payload: bytes
    readings: list[dict] = field(default_factory=list)
    #: readings refused at the edge (control characters), with why: kept at the flush
    refused: list[tuple[dict, str]] = field(default_factory=list)

    def where(self) -> str:
        return f"message {self.mid} on {self.topic[:120].decode('utf-8', 'replace')!r}"


def _topic_bytes(message: Any) -> bytes:
    """The topic as received (paho's ``message.topic`` raises on non-UTF-8 topics)."""
    raw = getattr(message, "_topic", None)
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw)
    return str(message.topic).encode("utf-8", "replace")


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first[:300]}"


def _is_transient(exc: BaseException) -> bool:
    """A failure of the database connection (retry everything) rather than of the data."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc,
        (
            sa.exc.OperationalError,
            sa.exc.InterfaceError,
            sa.exc.DisconnectionError,
            sa.exc.TimeoutError,
            ConnectionError,
            TimeoutError,
            OSError,
        ),
    )


class Subscriber:
    """Subscribe to ``cryofac/env/#`` and commit readings in batches, acknowledging each
    message only once its readings are committed (see the module docstring).

    ``host``, ``port``, ``client_id``, ``batch_size`` and ``flush_interval_s`` are
    shorthands for the fields of the same name of ``broker`` and ``batching``.
    ``evaluate_every_s``: also evaluate alarms this often (seconds; None: never).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session] | Callable[[], Session],
        *,
        broker: BrokerOptions | None = None,
        batching: BatchOptions | None = None,
        limits: PayloadLimits | None = None,
        config: EnvConfig | None = None,
        evaluate_every_s: float | None = None,
        now: Callable[[], datetime] | None = None,
        host: str | None = None,
        port: int | None = None,
        client_id: str | None = None,
        batch_size: int | None = None,
        flush_interval_s: float | None = None,
    ):
        broker = broker or BrokerOptions()
        overrides = {"host": host, "port": port, "client_id": client_id}
        self.broker = replace(broker, **{k: v for k, v in overrides.items() if v is not None})
        batching = batching or BatchOptions()
        overrides = {"batch_size": batch_size, "flush_interval_s": flush_interval_s}
        self.batching = replace(batching, **{k: v for k, v in overrides.items() if v is not None})
        self.limits = limits or PayloadLimits()
        self.sessions = sessions
        self.config = config or load_env_config()
        self.evaluate_every_s = evaluate_every_s
        self.now = now
        self.stats = SubscriberStats()
        self.subscribed = threading.Event()
        self._inbox: queue.SimpleQueue[_Delivery] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards _generation/_connected against acks
        self._generation = 0
        self._connected = False
        self._connack = threading.Event()
        self._refusal: str | None = None
        self._client: Any = None
        self._failed_in_row = 0

    # paho callbacks (network thread): never raise ---------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        try:
            if getattr(reason_code, "is_failure", False):
                self._refusal = str(reason_code)
                log.error(
                    "MQTT broker %s refused the connection: %s", self.broker.address, reason_code
                )
                self._connack.set()
                return
            with self._lock:
                self._generation += 1
                self._connected = True
            self.stats.connects += 1
            present = getattr(flags, "session_present", None)
            log.info("connected to %s (session present: %s)", self.broker.address, present)
            client.subscribe(self.broker.subscription, qos=self.broker.qos)
            self._connack.set()
        except Exception:  # pragma: no cover - defensive
            log.exception("on_connect failed")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        try:
            with self._lock:
                self._generation += 1
                self._connected = False
            log.warning("disconnected from %s (%s); reconnecting", self.broker.address, reason_code)
        except Exception:  # pragma: no cover - defensive
            log.exception("on_disconnect failed")

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties=None):
        try:
            failed = [code for code in reason_codes if getattr(code, "is_failure", False)]
            if failed:
                log.error("subscription to %s refused: %s", self.broker.subscription, failed[0])
                return
            self.subscribed.set()
        except Exception:  # pragma: no cover - defensive
            log.exception("on_subscribe failed")

    def _on_message(self, client, userdata, message):
        """Parse here, on paho's thread: it overlaps the writer's database waits."""
        try:
            delivery = _Delivery(
                message.mid,
                message.qos,
                self._generation,
                _topic_bytes(message),
                bytes(message.payload),
            )
        except Exception:  # pragma: no cover - defensive
            log.exception("on_message failed")
            return
        try:
            self._parse(delivery)
        except Exception:  # pragma: no cover - _parse catches the parser's errors itself
            log.exception("on_message failed")
        finally:
            self._inbox.put(delivery)

    def _parse(self, delivery: _Delivery) -> None:
        self.stats.messages += 1
        try:
            parsed: ParsedMessage = parse_message(
                delivery.topic, delivery.payload, self.config, self.limits
            )
        except MalformedMessage as exc:
            self.stats.malformed += 1
            log.warning("skipped malformed message: %s", exc)
            return
        except Exception as exc:  # a parser bug must not stop ingest
            self.stats.malformed += 1
            log.error("skipped %s: cannot parse it (%s)", delivery.where(), _one_line(exc))
            return
        delivery.readings = parsed.readings
        for (position, reason), item in zip(parsed.refused, parsed.refused_items, strict=True):
            self.stats.refused += 1
            log.warning("rejected reading %d from %s: %s", position, parsed.sensor, reason)
            delivery.refused.append((item, reason))

    # writer (the thread that calls run) ------------------------------------------
    def _commit(self, readings: list[dict]) -> None:
        """Store ``readings`` in one transaction (raises on failure)."""
        from instrument_env.ingest import ingest_readings

        if not readings:
            return
        with self.sessions() as session:
            now = self.now() if self.now else None
            result = ingest_readings(session, readings, source="mqtt", config=self.config, now=now)
            session.commit()
        self.stats.flushes += 1
        self.stats.accepted += result.accepted
        self.stats.rejected += len(result.rejected)
        for item in result.rejected[:20]:
            reading = readings[item["index"]]
            log.warning("rejected reading from %s: %s", reading.get("sensor", "?"), item["reason"])
        if len(result.rejected) > 20:
            log.warning("... and %d more rejected readings", len(result.rejected) - 20)

    def _keep_refused(self, batch: list[_Delivery]) -> None:
        """Keep the batch's readings refused at the edge in env_rejected_readings, with
        their reason (one transaction, before the batch is acknowledged; once)."""
        from instrument_env.ingest import keep_refused

        refused = [entry for delivery in batch for entry in delivery.refused]
        if not refused:
            return
        with self.sessions() as session:
            now = self.now() if self.now else None
            keep_refused(session, refused, source="mqtt", now=now)
            session.commit()
        for delivery in batch:
            delivery.refused = []

    def _isolate(self, parts: list[list[dict]]) -> tuple[int, list[tuple[dict, str]]]:
        """Commit the readings of ``parts`` (one list per message), halving on a data error
        (first by message, then within a message) until each failing reading is alone.

        Returns (readings in committed transactions, [(reading, why it failed)]).
        Connection-level errors are raised, and so is a run of :data:`MAX_FAILED_COMMITS`
        failed commits without a success (the database refuses everything: not the data).
        """
        try:
            self._commit([r for part in parts for r in part])
        except Exception as exc:
            if _is_transient(exc):
                raise
            self._failed_in_row += 1
            if self._failed_in_row > MAX_FAILED_COMMITS:
                raise
            if len(parts) > 1:
                half = len(parts) // 2
                left, right = parts[:half], parts[half:]
            elif len(parts[0]) > 1:
                half = len(parts[0]) // 2
                left, right = [parts[0][:half]], [parts[0][half:]]
            else:
                return 0, [(parts[0][0], _one_line(exc))]
            stored1, failed1 = self._isolate(left)
            stored2, failed2 = self._isolate(right)
            return stored1 + stored2, failed1 + failed2
        self._failed_in_row = 0
        return sum(len(part) for part in parts), []

    def flush(self, batch: list[_Delivery]) -> list[_Delivery]:
        """Commit and acknowledge what can be; returns the deliveries to retry later."""
        from instrument_env.ingest import keep_refused

        if not batch:
            return []
        parts = [d.readings for d in batch if d.readings]
        self._failed_in_row = 0
        try:
            self._keep_refused(batch)
        except Exception as exc:  # the database is unreachable: keep everything, retry
            self._record_error(exc)
            return batch
        try:
            stored, failed = self._isolate(parts) if parts else (0, [])
        except Exception as exc:  # the database is unreachable: keep everything, retry
            self._record_error(exc)
            return batch
        if failed and not stored:  # nothing went in: the database, not the data
            self._record_error(RuntimeError(failed[0][1]))
            return batch
        self.stats.poison += len(failed)
        if failed:  # kept with the reason, like every refused reading (best effort)
            try:
                with self.sessions() as session:
                    now = self.now() if self.now else None
                    kept = [(reading, f"cannot be stored ({why})") for reading, why in failed]
                    keep_refused(session, kept, source="mqtt", now=now)
                    session.commit()
            except Exception as exc:
                log.error("could not keep the unstorable readings: %s", _one_line(exc))
        for reading, why in failed[:20]:
            log.error(
                "dropped reading from %s at %s: cannot be stored (%s)",
                reading.get("sensor", "?"),
                str(reading.get("ts", "?"))[:40],
                why,
            )
        self._ack(batch)
        return []

    def _record_error(self, exc: BaseException) -> None:
        line = _one_line(exc)
        log.error("database write failed (readings kept, not acknowledged): %s", line)
        self.stats.errors.append(line)

    def _ack(self, deliveries: Iterable[_Delivery]) -> None:
        """PUBACK each delivery received on the current connection (the broker resends
        the others itself: their message ids belong to a closed connection)."""
        with self._lock:
            for delivery in deliveries:
                if delivery.qos and self._connected and delivery.generation == self._generation:
                    self._client.ack(delivery.mid, delivery.qos)
                    self.stats.acked += 1

    def evaluate_alarms(self) -> None:
        from instrument_env.alarms import evaluate
        from instrument_env.models import now_utc

        with self.sessions() as session:
            evaluate(session, self.now() if self.now else now_utc(), self.config)
            session.commit()

    def start(self) -> None:
        """Connect and subscribe; returns once the subscription is granted.

        Raises BrokerUnavailable (unreachable, no answer) or BrokerRefused (credentials,
        authorisation). Later connection losses are retried by paho's network thread.
        """
        client = make_client(self.broker, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        _connect(client, self.broker, persistent=True)
        client.loop_start()
        if not self._connack.wait(self.broker.connect_timeout_s):
            self._stop_client()
            raise BrokerUnavailable(
                f"no answer from the MQTT broker at {self.broker.address} "
                f"within {self.broker.connect_timeout_s:g} s"
            )
        if self._refusal is not None:
            self._stop_client()
            raise BrokerRefused(
                f"the MQTT broker at {self.broker.address} refused the connection: {self._refusal}"
            )
        if not self.subscribed.wait(self.broker.connect_timeout_s):
            self._stop_client()
            raise BrokerRefused(
                f"the MQTT broker at {self.broker.address} did not grant the subscription "
                f"to {self.broker.subscription!r} within {self.broker.connect_timeout_s:g} s"
            )

    def _stop_client(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def run(
        self,
        *,
        stop: threading.Event | None = None,
        duration_s: float | None = None,
        max_readings: int | None = None,
    ) -> SubscriberStats:
        """Run until ``stop`` is set, ``duration_s`` passed or ``max_readings`` stored.

        On the way out the waiting messages are committed and acknowledged.
        """
        if self._client is None:
            self.start()
        stop = stop or threading.Event()
        options = self.batching
        started = last_eval = time.monotonic()
        last_arrival = oldest = started
        retry_at, backoff = 0.0, 0.25
        pending: list[_Delivery] = []
        waiting_readings = 0
        try:
            while not stop.is_set():
                try:
                    delivery = self._inbox.get(timeout=min(options.idle_flush_s, 0.1))
                except queue.Empty:
                    pass
                else:
                    while True:
                        if not pending:
                            oldest = time.monotonic()
                        pending.append(delivery)
                        waiting_readings += len(delivery.readings)
                        if (
                            waiting_readings >= options.batch_size
                            or len(pending) >= options.batch_size
                        ):
                            break
                        try:
                            delivery = self._inbox.get_nowait()
                        except queue.Empty:
                            break
                    last_arrival = time.monotonic()
                now = time.monotonic()
                due = pending and (
                    waiting_readings >= options.batch_size
                    or len(pending) >= options.batch_size
                    or now - oldest >= options.flush_interval_s
                    or now - last_arrival >= options.idle_flush_s
                )
                if due and now >= retry_at:
                    pending = self.flush(pending)
                    waiting_readings = sum(len(d.readings) for d in pending)
                    if pending:
                        retry_at, backoff = now + backoff, min(backoff * 2, options.retry_max_s)
                    else:
                        retry_at, backoff = 0.0, 0.25
                if self.evaluate_every_s and now - last_eval >= self.evaluate_every_s:
                    self._safe(self.evaluate_alarms)
                    last_eval = now
                if duration_s is not None and now - started >= duration_s:
                    break
                if max_readings is not None and self.stats.accepted >= max_readings:
                    break
        finally:
            while True:
                try:
                    delivery = self._inbox.get_nowait()
                except queue.Empty:
                    break
                pending.append(delivery)
            self.flush(pending)
            self._stop_client()
        return self.stats

    def _safe(self, action: Callable[[], None]) -> bool:
        try:
            action()
        except Exception as exc:  # keep the subscriber alive
            log.error("alarm evaluation failed: %s", _one_line(exc))
            self.stats.errors.append(_one_line(exc))
            return False
        return True
