"""The portal's env routes under fault: oversized and deeply nested bodies, control
characters, a broken or edited limits file, and a database that refuses connections or
accepts them and never answers (a TCP proxy in the test black-holes it)."""

from __future__ import annotations

import io
import json
import shutil
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from cryofac.config import PACKAGE_DIR
from instrument_env import alarms
from instrument_env.cli import env_group
from instrument_env.sim import EnvSimulator
from tests.instrument_env.faults import FaultProxy, env_portal


def make_api(database_url, **config):
    app, client, headers = env_portal(database_url, **config)
    return app, client, headers("tech")


def dispose(app):
    app.extensions["cryofac.engine"].dispose()
    gate_engine = app.extensions.get("cryofac.env_gate_engine")
    if gate_engine is not None:
        gate_engine.dispose()


class CountingStream(io.RawIOBase):
    """A request body of ``size`` bytes that is never materialised; counts reads."""

    def __init__(self, size: int):
        self.size, self.position, self.read_bytes = size, 0, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.position, 2: self.size}[whence]
        self.position = base + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self.size - self.position))
        buffer[:n] = b" " * n
        self.position += n
        self.read_bytes += n
        return n


def test_readings_body_limits_before_parsing(database_url):
    app, client, tech = make_api(database_url, ENV_MAX_BODY_BYTES=256 * 1024)
    try:
        now = datetime.now(UTC)
        one = {"sensor": "krios-t1", "quantity": "temperature", "value": 20.0, "unit": "°C"}
        # a million readings (about 100 MB): refused on its declared length, unread
        stream = CountingStream(100_000_000)
        big = client.post(
            "/api/v1/env/readings",
            input_stream=stream,
            headers={**tech, "Content-Type": "application/json", "Content-Length": "100000000"},
        )
        assert big.status_code == 413 and big.get_json()["error"]["code"] == "too_large"
        assert stream.read_bytes == 0
        # a real body over the limit
        body = json.dumps([{**one, "ts": now.isoformat()}] * 5000).encode()
        assert len(body) > 256 * 1024
        over = client.post(
            "/api/v1/env/readings", data=body, headers={**tech, "Content-Type": "application/json"}
        )
        assert over.status_code == 413 and "larger than 262144 bytes" in over.get_data(True)
        # 100 kB nested 50,000 deep: refused before the parser recurses
        deep = client.post(
            "/api/v1/env/readings",
            data=b"[" * 50_000 + b"]" * 50_000,
            headers={**tech, "Content-Type": "application/json"},
        )
        assert deep.status_code == 400
        assert "nested 50000 deep (at most 8 allowed)" in deep.get_json()["error"]["message"]
        latin1 = client.post(
            "/api/v1/env/readings",
            data='[{"sensor": "krios-t1", "unit": "°C"}]'.encode("latin-1"),
            headers={**tech, "Content-Type": "application/json"},
        )
        assert latin1.status_code == 400 and "UTF-8" in latin1.get_json()["error"]["message"]
        # a NUL in one band: that reading is refused, the 100 others are stored
        good = [{**one, "ts": (now - timedelta(seconds=10 * k)).isoformat()} for k in range(100)]
        nul = {
            "sensor": "krios-vib",
            "quantity": "vibration",
            "band": "8\u0000",
            "value": 1.0,
            "unit": "µm/s",
            "ts": now.isoformat(),
        }
        mixed = client.post(
            "/api/v1/env/readings", json=[*good[:50], nul, *good[50:]], headers=tech
        )
        assert mixed.status_code == 202
        assert mixed.get_json()["accepted"] == 100
        assert mixed.get_json()["rejected"][0]["index"] == 50
        after = client.post(
            "/api/v1/env/readings",
            json=[{**one, "ts": (now + timedelta(seconds=1)).isoformat()}],
            headers=tech,
        )
        assert after.status_code == 202 and after.get_json()["accepted"] == 1
    finally:
        dispose(app)


def test_gate_reads_current_limits_and_answers_503_on_a_broken_file(database_url, tmp_path):
    directory = tmp_path / "config"
    shutil.copytree(PACKAGE_DIR, directory, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    app, client, tech = make_api(database_url, FACILITY_CONFIG_DIR=str(directory))
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        sim = EnvSimulator(app_config(directory), seed=4, rooms=["krios-room"])
        readings = sim.readings(now - timedelta(minutes=70), now - timedelta(seconds=1))
        for first in range(0, len(readings), 20_000):
            r = client.post(
                "/api/v1/env/readings", json=readings[first : first + 20_000], headers=tech
            )
            assert r.status_code == 202 and r.get_json()["rejected"] == []
        url = "/api/v1/instruments/krios1/gate"
        open_ = client.get(url, headers=tech)
        assert open_.status_code == 200 and open_.get_json()["allowed"], open_.get_json()
        limits = directory / "limits.yaml"
        text = limits.read_text()
        limits.write_text(text.replace("warning: 21.0, limit: 22.0", "warning: 10.0, limit: 11.0"))
        tightened = client.get(url, headers=tech)
        assert tightened.status_code == 200 and not tightened.get_json()["allowed"]
        assert any("limit 11 °C" in r for r in tightened.get_json()["reasons"])
        limits.write_text(text.replace("rules:", "rules: [", 1))
        broken = client.get(url, headers=tech)
        assert broken.status_code == 503
        body = broken.get_json()
        assert body["allowed"] is False
        assert body["reasons"][0].startswith("configuration cannot be read: ")
        assert "invalid YAML" in body["reasons"][0]
        posted = client.post("/api/v1/env/readings", json=readings[:1], headers=tech)
        assert (
            posted.status_code == 503 and "configuration" in posted.get_json()["error"]["message"]
        )
        limits.write_text(text)
        assert client.get(url, headers=tech).get_json()["allowed"]
        assert client.get(url).status_code == 401
    finally:
        dispose(app)


def app_config(directory):
    from instrument_env.limits import load_env_config

    return load_env_config(directory)


def test_alarm_list_is_paged_and_filtered(database_url, env_config):
    app, client, tech = make_api(database_url)
    try:
        with app.extensions["cryofac.sessionmaker"]() as db:
            alarms.evaluate(db, datetime.now(UTC), env_config)  # no data: one per sensor
            db.commit()
        first = client.get("/api/v1/alarms?limit=4&state=open", headers=tech)
        assert first.status_code == 200 and len(first.get_json()) == 4
        total = int(first.headers["X-Total-Count"])
        assert total == len(env_config.sensors)
        seen = [a["id"] for a in first.get_json()]
        link = first.headers["Link"]
        while link:
            next_url = link.split(">")[0].lstrip("<").replace("http://localhost", "")
            page = client.get(next_url, headers=tech)
            seen += [a["id"] for a in page.get_json()]
            link = page.headers.get("Link")
        assert len(seen) == total == len(set(seen))
        krios = client.get("/api/v1/alarms?room=krios-room&severity=critical", headers=tech)
        assert {a["sensor"] for a in krios.get_json()} == {
            "krios-t1",
            "krios-t2",
            "krios-mag",
            "krios-vib",
        }
        for bad in ("limit=0", "limit=x", "severity=fatal", "since=yesterday"):
            assert client.get(f"/api/v1/alarms?{bad}", headers=tech).status_code in (400, 422)
    finally:
        dispose(app)


@pytest.mark.postgres
def test_gate_503_when_database_refuses_or_never_answers(postgres_database_url):
    url = sa.engine.make_url(postgres_database_url)
    proxy = FaultProxy((url.host or "127.0.0.1", url.port or 5432))
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    app, client, tech = make_api(proxied, ENV_GATE_TIMEOUT_S=1.0)
    try:
        gate = "/api/v1/instruments/krios1/gate"
        decided = client.get(gate, headers=tech)
        assert decided.status_code == 200  # no readings: refused, but decided
        # the database goes silent: pooled connections hang, new ones never get an answer
        proxy.mode = "blackhole"
        silent = client.get(gate, headers=tech)
        assert silent.status_code == 503, silent.get_json()
        body = silent.get_json()
        assert body["allowed"] is False and "no answer within 1 s" in body["reasons"][0]
        again = client.get(gate, headers=tech)  # a new connection: the connect timeout
        assert again.status_code == 503 and again.get_json()["allowed"] is False
        assert "database unavailable" in again.get_json()["reasons"][0]
        # the CLI too: refused with the reason after the connect timeout, no hang
        cli = CliRunner().invoke(env_group, ["--db", proxied, "gate", "krios1"])
        assert cli.exit_code == 1
        assert "cannot open the database: " in cli.output
        assert "connection timeout expired" in cli.output or "no answer within 5 s" in cli.output
        # the database refuses connections
        proxy.close()
        app.extensions["cryofac.env_gate_engine"].dispose()
        refused = client.get(gate, headers=tech)
        assert refused.status_code == 503
        assert "refused" in refused.get_json()["reasons"][0].lower()
    finally:
        proxy.close()
        app.extensions["cryofac.engine"].dispose()
        app.extensions["cryofac.env_gate_engine"].dispose()
        engine = sa.create_engine(postgres_database_url)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        engine.dispose()
