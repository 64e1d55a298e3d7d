"""Publishing readings to the broker (the simulator, tests, benchmarks), at QoS 1 with
every message's acknowledgement awaited, across reconnects."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable

from instrument_env.limits import EnvConfig, load_env_config
from instrument_env.mqtt_client import BrokerOptions, BrokerUnavailable, _connect, make_client
from instrument_env.mqtt_payload import topic_for


def publish_readings(
    batches: Iterable[list[dict]],
    *,
    host: str = "127.0.0.1",
    port: int = 1883,
    config: EnvConfig | None = None,
    qos: int = 1,
    pace: Callable[[list[dict]], None] | None = None,
    broker: BrokerOptions | None = None,
    max_inflight: int = 1000,
    timeout_s: float = 60.0,
) -> int:
    """Publish readings, one message per sensor per batch; returns readings published.

    Waits until the broker has acknowledged every message (QoS 1), across reconnects.
    ``broker`` (credentials, TLS) overrides ``host`` and ``port``.
    """
    config = config or load_env_config()
    options = broker or BrokerOptions(host=host, port=port)
    client = make_client(options, client_id=f"cryofac-sim-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(max_inflight)
    acknowledged = _Counter()

    def on_publish(client, userdata, mid, reason_code=None, properties=None):
        acknowledged.add()

    client.on_publish = on_publish
    _connect(client, options, persistent=False)
    client.loop_start()
    count = messages = 0
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
                # a message published while the connection is down is sent on reconnect
                client.publish(topic_for(room, sensor_id), json.dumps(items), qos=qos)
                messages += 1
                count += len(items)
        if qos:
            acknowledged.wait_for(messages, timeout_s, options)
    finally:
        client.disconnect()
        client.loop_stop()
    return count


class _Counter:
    """Messages the broker has acknowledged (paho calls on_publish once per message,
    also for one sent again after a reconnect)."""

    def __init__(self) -> None:
        self.value = 0
        self._condition = threading.Condition()

    def add(self) -> None:
        with self._condition:
            self.value += 1
            self._condition.notify_all()

    def wait_for(self, count: int, timeout_s: float, options: BrokerOptions) -> None:
        with self._condition:
            if not self._condition.wait_for(lambda: self.value >= count, timeout_s):
                raise BrokerUnavailable(
                    f"{count - self.value} of {count} messages not acknowledged by "
                    f"{options.address} within {timeout_s:g} s"
                )


def publish_raw(
    topic: str,
    payload: bytes | str,
    *,
    host: str = "127.0.0.1",
    port: int = 1883,
    broker: BrokerOptions | None = None,
) -> None:
    """Publish one message as is (used to test how malformed messages are handled)."""
    options = broker or BrokerOptions(host=host, port=port)
    client = make_client(options, client_id=f"cryofac-raw-{uuid.uuid4().hex[:8]}")
    _connect(client, options, persistent=False)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1)
        deadline = time.monotonic() + 10
        while not info.is_published() and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        client.disconnect()
        client.loop_stop()
