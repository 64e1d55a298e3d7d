"""instrument_env: lossless MQTT ingest through `cryofac env mqtt`, with and without kill -9.

Everything real: a private Mosquitto configured from the shipped ``cryofac/config/mosquitto.conf``
(persistence, no queue cap, in-flight window; free loopback port, persistence in a
temporary folder), the ``cryofac env mqtt`` command as its own process, a fresh
database (PostgreSQL by default: a throw-away database created and dropped), and
publisher processes using paho-mqtt at QoS 1.

Readings are generated beforehand (not timed): ``--readings`` distinct, plausible
readings of the shipped configuration's channels but vibration (13: temperature,
humidity, magnetic field, LN2 level, cooling water) over the last hours,
``--per-message`` consecutive readings of one channel per message (a logger batching
its samples). Publishers send them as fast as they can
(``--rate 0``) or at ``--rate`` messages/s in total.

Reported: readings/s from the first publish to the last reading committed (the count
of rows polled every 0.2 s), the publishers' own rate, the ingester's CPU time (user +
system; readings per CPU-second is the figure that does not depend on how loaded the
shared machine is; PostgreSQL's own CPU is not in it), and **lost** = readings the
broker acknowledged to a publisher minus readings stored (must be 0). With ``--kill-at
F`` the ingester is killed with SIGKILL when a fraction F of the messages has been
published, and started again ``--down-s`` seconds later (the issue's case: 100,000
readings, one per message, 1,000 msg/s, kill at 40 %).

    python benchmarks/env_mqtt_ingest.py --readings 400000 --per-message 100 --publishers 2
    python benchmarks/env_mqtt_ingest.py --readings 100000 --per-message 1 --rate 1000 --kill-at 0.4
    python benchmarks/env_mqtt_ingest.py --readings 20000 --per-message 1 --rate 1000 \
        --kill-at 0.4 --broker-defaults      # what Mosquitto's default limits lose
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from instrument_env.db import upgrade  # noqa: E402
from instrument_env.limits import load_env_config  # noqa: E402
from instrument_env.mosquitto import LocalBroker, spawn_ingester  # noqa: E402
from instrument_env.sim import VIB_BANDS  # noqa: E402

DEFAULT_PG = os.environ.get(
    "CRYOFAC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
#: a plausible level of each quantity (readings swing ±0.2 % around it)
LEVELS = {
    "temperature": 20.0,
    "humidity": 45.0,
    "magnetic_field_ac": 25.0,
    "magnetic_field_dc": 48.0,
    "ln2_level": 90.0,
    "cooling_water_temperature": 18.0,
}


def channels() -> list[tuple[str, str, str, float, str]]:
    """(room, sensor, quantity, level, unit) of every channel of the shipped facility
    configuration but the vibration bands (``--bands`` sends those)."""
    config = load_env_config()
    return [
        (sensor.room, sensor.id, quantity, LEVELS[quantity], config.units[quantity])
        for sensor in config.sensors.values()
        for quantity in sensor.quantities
        if quantity != "vibration"
    ]


def make_messages(readings: int, per_message: int, bands: bool = False) -> list[tuple[str, bytes]]:
    """(topic, payload) pairs: channel by channel in turn, 1 s between a channel's readings;
    with ``bands``, the vibration sensor alone, every band at each time (a band logger)."""
    if bands:
        return _band_messages(readings, per_message)
    n_messages = math.ceil(readings / per_message)
    chans = channels()
    per_channel_s = math.ceil(n_messages / len(chans)) * per_message
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=per_channel_s + 600)
    out, left = [], readings
    for m in range(n_messages):
        room, sensor, quantity, level, unit = chans[m % len(chans)]
        first = (m // len(chans)) * per_message
        items = []
        for j in range(min(per_message, left)):
            k = first + j
            ts = (start + timedelta(seconds=k)).isoformat()
            value = round(level * (1 + 0.002 * math.sin(k / 300.0)), 4)
            items.append({"quantity": quantity, "ts": ts, "value": value, "unit": unit})
        left -= len(items)
        out.append((f"cryofac/env/{room}/{sensor}", json.dumps(items).encode()))
    return out


def _band_messages(readings: int, per_message: int) -> list[tuple[str, bytes]]:
    """The vibration sensor's 20 bands at each 1 s time, ``per_message`` readings each."""
    times = math.ceil(readings / len(VIB_BANDS))
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=times + 600)
    items = [
        {
            "quantity": "vibration",
            "ts": (start + timedelta(seconds=k)).isoformat(),
            "band": band,
            "value": round(0.2 + 0.01 * (b + math.sin(k / 300.0)), 4),
            "unit": "µm/s",
        }
        for k in range(times)
        for b, band in enumerate(VIB_BANDS)
    ][:readings]
    return [
        ("cryofac/env/krios-room/krios-vib", json.dumps(items[i : i + per_message]).encode())
        for i in range(0, len(items), per_message)
    ]


def publisher(port: int, chunk, rate: float, kill_mark, counter, start_evt, ready) -> None:
    """Publish ``chunk`` at QoS 1 (``rate`` msg/s, 0 = as fast as possible); count PUBACKs."""
    import paho.mqtt.client as mqtt

    done = threading.Event()
    count = {"acked": 0}

    def on_publish(client, userdata, mid, reason_code=None, properties=None):
        count["acked"] += 1
        if count["acked"] == len(chunk):
            done.set()

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:8]}"
    )
    client.max_inflight_messages_set(1000)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    ready.set()
    start_evt.wait()
    t0 = time.monotonic()
    for i, (topic, payload) in enumerate(chunk):
        if rate:
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        client.publish(topic, payload, qos=1)
        with counter.get_lock():  # shared: messages published by all publishers
            counter.value += 1
    done.wait(600)
    kill_mark.put((len(chunk), count["acked"], time.monotonic() - t0))
    client.disconnect()
    client.loop_stop()


class Database:
    def __init__(self, backend: str, pg_url: str):
        self.backend = backend
        if backend == "sqlite":
            self.folder = tempfile.mkdtemp(prefix="env-mqtt-bench-")
            self.url = f"sqlite:///{self.folder}/env.sqlite3"
            return
        self.admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
        self.name = f"cryofac_bench_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        self.url = sa.engine.make_url(pg_url).set(database=self.name).render_as_string(False)

    def close(self) -> None:
        if self.backend == "postgresql":
            with self.admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            self.admin.dispose()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def start_ingester(
    url: str, port: int, batch_size: int, index: int, group: bool
) -> subprocess.Popen:
    extra = ["--batch-size", str(batch_size), *(["--share-group", "bench"] if group else [])]
    return spawn_ingester(url, port, f"bench-ingest-{index}", *extra, source_root=REPO)


def run(args) -> dict:
    db = Database(args.backend, args.pg_url)
    broker = LocalBroker(
        Path(tempfile.mkdtemp(prefix="env-mqtt-broker-")), shipped=not args.broker_defaults
    ).start()
    try:
        upgrade(db.url)
        engine = sa.create_engine(db.url)

        def stored() -> int:
            with engine.connect() as conn:
                return conn.execute(
                    sa.text("SELECT count(*) FROM env_readings WHERE band <> 'max'")
                ).scalar()

        messages = make_messages(args.readings, args.per_message, args.bands)
        group = args.ingesters > 1
        ingesters = [
            start_ingester(db.url, broker.port, args.batch_size, i, group)
            for i in range(args.ingesters)
        ]
        ctx = mp.get_context("fork")
        results, counter, start_evt = ctx.Queue(), ctx.Value("l", 0), ctx.Event()
        chunks = [messages[i :: args.publishers] for i in range(args.publishers)]
        rate = args.rate / args.publishers if args.rate else 0.0
        readies = [ctx.Event() for _ in chunks]
        procs = [
            ctx.Process(
                target=publisher, args=(broker.port, c, rate, results, counter, start_evt, r)
            )
            for c, r in zip(chunks, readies, strict=True)
        ]
        for p in procs:
            p.start()
        for r in readies:
            r.wait(60)
        load_before = os.getloadavg()
        t0 = time.monotonic()
        start_evt.set()
        killed = None
        if args.kill_at is not None:
            mark = int(len(messages) * args.kill_at)
            while counter.value < mark:
                time.sleep(0.005)
            ingesters[0].send_signal(signal.SIGKILL)  # the first (the only one by default)
            ingesters[0].wait()
            killed = {
                "at_messages": counter.value,
                "stored_at_kill": stored(),
                "t_s": time.monotonic() - t0,
            }
            time.sleep(args.down_s)
            ingesters[0] = start_ingester(db.url, broker.port, args.batch_size, 0, group)
            killed["restarted_t_s"] = time.monotonic() - t0
        pub = [results.get(timeout=900) for _ in procs]
        for p in procs:
            p.join(60)
        t_published = time.monotonic() - t0
        sent_readings = args.readings
        acked_messages = sum(a for _, a, _ in pub)
        last, last_change = -1, time.monotonic()
        while True:
            n = stored()
            now = time.monotonic()
            if n != last:
                last, last_change = n, now
            if n >= sent_readings or now - last_change > args.settle_s:
                break
            time.sleep(0.2)
        t_stored = last_change - t0
        load_after = os.getloadavg()
        cpu_s = [cpu_seconds(ingester.pid) for ingester in ingesters]
        summary = []
        for ingester in ingesters:
            ingester.send_signal(signal.SIGTERM)
            summary.append(ingester.communicate(timeout=120)[0].strip())
        engine.dispose()
        return {
            "backend": args.backend,
            "readings": sent_readings,
            "per_message": args.per_message,
            "bands": args.bands,
            "messages": len(messages),
            "publishers": args.publishers,
            "ingesters": args.ingesters,
            "batch_size": args.batch_size,
            "rate_msg_s": args.rate,
            "broker": "mosquitto defaults"
            if args.broker_defaults
            else "cryofac/config/mosquitto.conf",
            "messages_acknowledged_by_broker": acked_messages,
            "stored": last,
            "lost": sent_readings - last,
            "publish_s": round(t_published, 2),
            "publish_readings_per_s": round(sent_readings / max(max(p[2] for p in pub), 1e-9)),
            "all_stored_s": round(t_stored, 2),
            "readings_per_s_end_to_end": round(last / t_stored) if t_stored > 0 else None,
            "kill": killed,
            "ingester_cpu_s": cpu_s,
            "readings_per_ingester_cpu_s": round(last / sum(cpu_s)) if sum(cpu_s) else None,
            "ingester_summary": summary,
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in load_after],
        }
    finally:
        broker.stop()
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--readings", type=int, default=400_000)
    parser.add_argument("--per-message", type=int, default=100)
    parser.add_argument(
        "--bands", action="store_true", help="vibration, all 20 bands per time (band logger)"
    )
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s in total (0: max)")
    parser.add_argument("--kill-at", type=float, default=None, help="fraction of messages")
    parser.add_argument("--down-s", type=float, default=2.0, help="ingester down this long")
    parser.add_argument("--batch-size", type=int, default=20000)
    parser.add_argument(
        "--ingesters", type=int, default=1, help="ingester processes (>1: a shared subscription)"
    )
    parser.add_argument("--settle-s", type=float, default=60.0, help="give up after no progress")
    parser.add_argument(
        "--broker-defaults",
        action="store_true",
        help="Mosquitto's default queue/in-flight limits instead of cryofac/config/mosquitto.conf",
    )
    parser.add_argument("--out", type=Path, default=None, help="append the result (JSON lines)")
    args = parser.parse_args()
    result = run(args)
    result["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
    text = json.dumps(result, ensure_ascii=False)
    print(json.dumps(result, indent=1, ensure_ascii=False))
    if args.out:
        with args.out.open("a") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
