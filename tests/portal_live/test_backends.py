"""The database-touching parts of this area on both backends (SQLite and PostgreSQL)."""

from __future__ import annotations

import json

from tests.portal_live.conftest import seed_environment


def test_files_provenance_outsiders_and_notifications(live_any_db):
    live = live_any_db
    seed_environment(live)
    client = live.app.test_client()
    alice = live.token(client, "alice")
    sid = live.session_id
    files = client.get(f"/api/v1/sessions/{sid}/files", headers=alice).get_json()["files"]
    names = [f["name"] for f in files]
    assert "map.mrc" in names and "environment.json" in names and "manifest.json" in names
    env = json.loads(
        client.get(f"/api/v1/sessions/{sid}/files/environment.json", headers=alice).data
    )
    assert env["room"] == "krios-room"
    part = client.get(
        f"/api/v1/sessions/{sid}/files/map.mrc", headers={**alice, "Range": "bytes=-64"}
    )
    assert part.status_code == 206 and len(part.data) == 64

    mallory = live.token(client, "mallory")
    for url in (f"/api/v1/sessions/{sid}/files", f"/api/v1/sessions/{sid}/files/map.mrc"):
        assert client.get(url, headers=mallory).status_code == 404
    # the request after a provenance computation still works (savepoint rolled back cleanly)
    assert client.get(f"/api/v1/sessions/{sid}", headers=alice).status_code == 200

    live.login(client, "tech")
    assert client.get("/tech/").status_code == 200
    live.run_worker_jobs()
    kinds = [m.kind for m in live.outbox()]
    assert "alarm" in kinds
