"""Every served file passes one path check; links from EXTERNAL_URL; no paths to researchers;
downloads audited."""

from __future__ import annotations

import sqlalchemy as sa

from portal.models import AcqSession, AuditEntry


def test_a_thumbnail_symlink_out_of_the_run_folder_is_not_served(live, client, tmp_path):
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    secret.write_bytes(b"\x89PNG not yours")
    thumbs = live.run_dir / "thumbnails"
    for png in thumbs.glob("*_mic.png"):
        png.unlink()
        png.symlink_to(secret)
    live.login(client, "alice")
    response = client.get(f"/sessions/{live.session_id}/run/thumbnails/mic")
    assert response.status_code == 404 and b"not yours" not in response.data
    # a symlink that stays inside the run folder is still served
    inside = live.run_dir / "inside.png"
    inside.write_bytes(b"\x89PNG inside")
    for png in thumbs.glob("*_mic.png"):
        png.unlink()
        png.symlink_to(inside)
    response = client.get(f"/sessions/{live.session_id}/run/thumbnails/mic")
    assert response.status_code == 200 and response.data == b"\x89PNG inside"


def test_signed_links_use_the_external_url_not_the_host_header(live, client):
    live.app.config["EXTERNAL_URL"] = "https://cryoem.example.org"
    headers = live.token(client, "alice")
    headers["Host"] = "evil.example"
    made = client.post(f"/api/v1/sessions/{live.session_id}/files/map.mrc/link", headers=headers)
    assert made.status_code == 201
    url = made.get_json()["url"]
    assert url.startswith("https://cryoem.example.org/dl/") and "evil" not in url


def test_researchers_get_no_server_paths_from_the_session_api(live, client):
    alice = live.token(client, "alice")
    body = client.get(f"/api/v1/sessions/{live.session_id}", headers=alice).get_json()
    assert body["run_dir"] is None and body["raw_dir"] is None
    assert str(live.run_dir) not in str(body)
    tech = live.token(client, "tech")
    body = client.get(f"/api/v1/sessions/{live.session_id}", headers=tech).get_json()
    assert body["run_dir"] == str(live.run_dir)
    # an unreadable run folder: the researcher's message names no path
    (live.run_dir / "summary.json").write_text("{not json")
    body = client.get(f"/api/v1/sessions/{live.session_id}", headers=alice).get_json()
    assert body["processing"]["state"] == "unreadable"
    assert str(live.run_dir) not in body["processing"]["error"]
    assert "summary.json" in body["processing"]["error"]
    staff_view = client.get(f"/api/v1/sessions/{live.session_id}", headers=tech).get_json()
    assert str(live.run_dir) in staff_view["processing"]["error"]


def test_downloads_are_audited(live, client):
    headers = live.token(client, "alice")
    got = client.get(f"/api/v1/sessions/{live.session_id}/files/fsc.star", headers=headers)
    assert got.status_code == 200
    assert client.head(f"/api/v1/sessions/{live.session_id}/files/fsc.star", headers=headers)
    with live.db() as db:
        entries = db.scalars(sa.select(AuditEntry).where(AuditEntry.action == "download")).all()
        assert len(entries) == 1  # the GET, not the HEAD
        assert entries[0].after["file"] == "fsc.star" and entries[0].after["via"] == "api"
        assert entries[0].actor_id == live.users["alice"]
        assert db.get(AcqSession, live.session_id).id == int(entries[0].entity_id)
    made = client.post(f"/api/v1/sessions/{live.session_id}/files/map.mrc/link", headers=headers)
    assert made.status_code == 201
    with live.db() as db:
        link = db.scalars(sa.select(AuditEntry).where(AuditEntry.action == "create_link")).one()
        assert link.after["file"] == "map.mrc" and link.actor_id == live.users["alice"]
