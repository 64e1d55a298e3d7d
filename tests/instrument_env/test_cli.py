from __future__ import annotations

import json

import sqlalchemy as sa

from cryofac.cli import main
from instrument_env.db import make_engine
from instrument_env.models import Reading


def run(capsys, *args):
    code = main(["env", *args])
    out, err = capsys.readouterr()
    return code, out, err


def count(url):
    engine = make_engine(url)
    with engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(Reading)).scalar()
    engine.dispose()
    return n


def test_cli_end_to_end(database_url, tmp_path, capsys):
    db = ["--db", database_url]
    code, _, err = run(capsys, *db, "alarms")
    assert code == 1 and "run 'cryofac env init-db'" in err and "Traceback" not in err
    assert run(capsys, *db, "init-db")[0] == 0
    csv_file = tmp_path / "logger.csv"
    csv_file.write_text(
        "sensor,quantity,ts,value,unit,band\n"
        "krios-t1,temperature,2026-03-02T00:00:00+00:00,20.1,°C,\n"
        "krios-t1,temperature,2026-03-02T00:00:10+00:00,warm,°C,\n"
        "krios-vib,vibration,2026-03-02T00:00:00+00:00,1.5,µm/s,12.5\n"
        "krios-t1,humidity,2026-03-02T00:00:00+00:00,44,%,\n",
        encoding="utf-8",
    )
    code, out, err = run(capsys, *db, "ingest-csv", str(csv_file), str(tmp_path / "missing.csv"))
    assert code == 1
    assert "logger.csv: 2 readings accepted, 2 rejected" in out
    assert "logger.csv: line 3: value 'warm' is not a finite number" in err
    assert "logger.csv: line 5: unit '%' for humidity (expected '%RH')" in err
    assert "missing.csv: cannot open" in err
    assert err.strip().endswith("2 file(s) had rejected readings or could not be read")
    assert "Traceback" not in err
    assert count(database_url) == 3  # + the derived vibration "max" band row

    start = "2026-03-02T01:00:00+00:00"
    code, out, _ = run(
        capsys,
        *db,
        "simulate",
        "--start",
        start,
        "--hours",
        "1.5",
        "--room",
        "krios-room",
        "--fault",
        "ac_failure@krios-room:20:15:4",
    )
    assert code == 0 and out.startswith("stored ")
    code, out, err = run(capsys, *db, "gate", "krios1", "--at", "2026-03-02T01:50:00+00:00")
    assert code == 1 and "REFUSED" in out and "krios-t1 temperature" in out
    assert "krios1: session refused" in err
    code, out, _ = run(capsys, *db, "gate", "glacios1", "--json", "--at", start)
    assert code == 1 and json.loads(out)["allowed"] is False
    code, _, err = run(capsys, *db, "gate", "titan9")
    assert code == 1 and err.startswith("Error: unknown instrument 'titan9'")
    code, out, err = run(capsys, *db, "simulate", "--fault", "flood@krios-room:1:1")
    assert code == 2 and "unknown fault 'flood'" in err

    out_file = tmp_path / "session" / "environment.json"
    code, out, _ = run(
        capsys,
        *db,
        "provenance",
        "krios1",
        "--start",
        start,
        "--end",
        "2026-03-02T02:30:00+00:00",
        "--out",
        str(out_file),
    )
    assert code == 0
    summary = json.loads(out_file.read_text())
    drift = {r["rule"]: r for r in summary["rules"]}["krios-temp-drift"]
    assert drift["time_out_of_limits_s"] > 600 and summary["in_limits"] is False
    code, out, _ = run(capsys, *db, "alarms", "--json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = run(capsys, *db, "maintain")
    assert code == 0 and out.startswith("deleted 0 raw readings")


def test_simulate_to_http_posts_batches(tmp_path, capsys, monkeypatch):
    """`simulate --to http` POSTs CONTRACT readings with the bearer token."""
    monkeypatch.delenv("CRYOFAC_API_TOKEN", raising=False)
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server API)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append((self.path, self.headers["Authorization"], body))
            payload = json.dumps({"accepted": len(body), "rejected": []}).encode()
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        code, out, err = run(
            capsys,
            "simulate",
            "--to",
            "http",
            "--url",
            url,
            "--token",
            "t0k",
            "--room",
            "prep-lab",
            "--start",
            "2026-03-02T00:00:00+00:00",
            "--hours",
            "1",
        )
        assert code == 0, err
        assert out.startswith("posted 240 readings")  # prep-t1: 2 quantities every 30 s
        path, auth, body = received[0]
        assert path == "/api/v1/env/readings" and auth == "Bearer t0k"
        assert set(body[0]) == {"sensor", "quantity", "ts", "value", "unit"}
        code, _, err = run(capsys, "simulate", "--to", "http", "--url", url, "--hours", "0.1")
        assert code == 2 and "--token" in err
    finally:
        server.shutdown()
