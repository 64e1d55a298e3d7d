"""Run pages, downloads and the files API through the real application."""

from __future__ import annotations

import hashlib
import json

import pytest


def test_files_api_lists_outputs_manifest_and_streams_with_range(live, client):
    headers = live.token(client, "alice")
    listing = client.get(f"/api/v1/sessions/{live.session_id}/files", headers=headers)
    assert listing.status_code == 200
    names = [f["name"] for f in listing.get_json()["files"]]
    for expected in (
        "map.mrc",
        "half1.mrc",
        "half2.mrc",
        "mask.mrc",
        "fsc.star",
        "particles.star",
        "classes2d.mrcs",
        "manifest.json",
        "MANIFEST.sha256",
    ):
        assert expected in names
    whole = client.get(f"/api/v1/sessions/{live.session_id}/files/map.mrc", headers=headers)
    assert whole.status_code == 200
    on_disk = (live.run_dir / "refine" / "map.mrc").read_bytes()
    assert whole.data == on_disk
    part = client.get(
        f"/api/v1/sessions/{live.session_id}/files/map.mrc",
        headers={**headers, "Range": "bytes=1024-"},
    )
    assert part.status_code == 206
    assert part.data == on_disk[1024:]
    assert part.headers["Content-Range"] == f"bytes 1024-{len(on_disk) - 1}/{len(on_disk)}"

    manifest = client.get(
        f"/api/v1/sessions/{live.session_id}/files/manifest.json", headers=headers
    )
    entries = {e["name"]: e for e in json.loads(manifest.data)["files"]}
    assert entries["map.mrc"]["sha256"] == hashlib.sha256(on_disk).hexdigest()
    assert entries["map.mrc"]["size"] == len(on_disk)

    missing = client.get(f"/api/v1/sessions/{live.session_id}/files/nope.mrc", headers=headers)
    assert missing.status_code == 404
    assert missing.get_json()["error"]["code"] == "not_found"


def test_signed_link_works_without_login_and_expires(live, client):
    headers = live.token(client, "alice")
    made = client.post(f"/api/v1/sessions/{live.session_id}/files/half1.mrc/link", headers=headers)
    assert made.status_code == 201
    url = made.get_json()["url"]
    path = url.split("portal.test", 1)[1]
    anonymous = live.app.test_client()
    got = anonymous.get(path, headers={"Range": "bytes=0-99"})
    assert got.status_code == 206 and len(got.data) == 100
    assert got.data == (live.run_dir / "refine" / "half1.mrc").read_bytes()[:100]
    tampered = anonymous.get(path[:-3] + "abc")
    assert tampered.status_code == 404
    live.app.config["DOWNLOAD_LINK_TTL_S"] = 1
    with live.app.test_request_context():
        from portal.downloads import make_link_token

        token, _ = make_link_token(
            live.app.config["SECRET_KEY"],
            user_id=live.users["alice"],
            session_id=live.session_id,
            name="map.mrc",
            expires_in_s=1,
            now=1000.0,
        )
    assert anonymous.get(f"/dl/{token}").status_code == 410


def test_signed_link_stops_working_when_owner_leaves_project(live, client):
    headers = live.token(client, "alice")
    url = client.post(
        f"/api/v1/sessions/{live.session_id}/files/map.mrc/link", headers=headers
    ).get_json()["url"]
    path = url.split("portal.test", 1)[1]
    with live.db() as db:
        from portal.models import project_members

        db.execute(project_members.delete().where(project_members.c.user_id == live.users["alice"]))
        db.commit()
    assert live.app.test_client().get(path).status_code == 404


def test_run_page_overview_and_status(live, client):
    live.login(client, "alice")
    page = client.get(f"/sessions/{live.session_id}/run")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Movies received" in html and "keeping up" in html
    assert "map.mrc" in html
    status = client.get(f"/sessions/{live.session_id}/run/status.json").get_json()
    assert status["movies_processed"] == 11 and status["movies_failed"] == 1
    assert status["keeping_up"] is True
    plot = client.get(f"/sessions/{live.session_id}/run/plots/time_drift")
    assert plot.status_code == 200 and plot.mimetype == "image/svg+xml"
    thumb = client.get(f"/sessions/{live.session_id}/run/thumbnails/mic")
    assert thumb.status_code == 200 and thumb.data.startswith(b"\x89PNG")
    overview = client.get("/runs").get_data(as_text=True)
    assert 'href="/runs">Runs</a>' in overview and "Rooms</a>" not in overview  # not staff
    assert f"#{live.session_id}" in overview
    assert f"#{live.other_session_id}" not in overview  # not alice's project
    download = client.get(f"/sessions/{live.session_id}/files/fsc.star")
    assert download.status_code == 200 and b"rlnFourierShellCorrelation" in download.data


def test_staff_overview_lists_every_run(live, client):
    live.login(client, "tech")
    html = client.get("/runs").get_data(as_text=True)
    assert 'href="/runs">Runs</a>' in html and 'href="/tech/">Rooms</a>' in html
    assert f"#{live.session_id}" in html and f"#{live.other_session_id}" in html


def _run_urls(session_id: int) -> list[tuple[str, str]]:
    base = f"/sessions/{session_id}"
    urls = [("GET", f"{base}/run"), ("GET", f"{base}/run/status.json")]
    from portal.runs.plots import PLOT_NAMES

    urls += [("GET", f"{base}/run/plots/{name}") for name in PLOT_NAMES]
    urls += [("GET", f"{base}/run/thumbnails/{k}") for k in ("mic", "ps")]
    return urls


def _file_names(live, client, session_id: int) -> list[str]:
    headers = live.token(client, "staff")
    files = client.get(f"/api/v1/sessions/{session_id}/files", headers=headers).get_json()
    return [f["name"] for f in files["files"]]


@pytest.mark.parametrize("outsider", ["mallory", "otherpi"])
def test_outsider_gets_404_on_every_run_and_download_url(live, outsider):
    """Every page, plot, thumbnail, file, link and API URL of another project: 404."""
    client = live.app.test_client()
    sid = live.session_id
    names = _file_names(live, client, sid)
    assert len(names) >= 9

    with live.app.test_request_context():
        registered = {
            rule.rule for rule in live.app.url_map.iter_rules() if "session_id" in rule.arguments
        }
    covered = set()
    api_headers = live.token(client, outsider)
    urls = [("GET", f"/api/v1/sessions/{sid}/files", "/api/v1/sessions/<int:session_id>/files")]
    for name in names:
        urls += [
            (
                "GET",
                f"/api/v1/sessions/{sid}/files/{name}",
                "/api/v1/sessions/<int:session_id>/files/<path:name>",
            ),
            ("HEAD", f"/api/v1/sessions/{sid}/files/{name}", None),
            (
                "POST",
                f"/api/v1/sessions/{sid}/files/{name}/link",
                "/api/v1/sessions/<int:session_id>/files/<path:name>/link",
            ),
        ]
    for method, url, rule in urls:
        response = client.open(url, method=method, headers={**api_headers, "Range": "bytes=0-9"})
        assert response.status_code == 404, (method, url, response.status_code)
        if method != "HEAD":
            assert response.get_json()["error"]["code"] == "not_found"
        covered.add(rule)

    live.login(client, outsider)
    page_urls = [(m, u) for m, u in _run_urls(sid)]
    page_urls += [("GET", f"/sessions/{sid}/files/{n}") for n in names]
    page_urls += [("POST", f"/sessions/{sid}/files/{n}/link") for n in names]
    for method, url in page_urls:
        response = client.open(url, method=method)
        assert response.status_code == 404, (method, url, response.status_code)
        adapter = live.app.url_map.bind("portal.test")
        endpoint, _ = adapter.match(url, method=method)
        covered.add(next(r.rule for r in live.app.url_map.iter_rules() if r.endpoint == endpoint))
    # a signed link issued to a member, used by the outsider, still works only as the member's
    # grant; an outsider cannot mint one. Every session-scoped URL rule of ours was tried:
    ours = {
        r
        for r in registered
        if r.startswith(("/sessions/", "/api/v1/sessions/<int:session_id>/files"))
    }
    assert ours - {None} <= covered, sorted(ours - covered)
    # and the member still gets them
    member = live.app.test_client()
    live.login(member, "alice")
    assert member.get(f"/sessions/{sid}/run").status_code == 200


def test_pages_of_a_session_without_a_run_yet(live, client):
    from tests.portal_live.conftest import add_session

    with live.db() as db:
        waiting = add_session(db, live.project_id, live.users["alice"], None, starts_in_h=48).id
        db.commit()
    live.login(client, "alice")
    page = client.get(f"/sessions/{waiting}/run")
    assert page.status_code == 200
    assert "Processing has not started" in page.get_data(as_text=True)
    status = client.get(f"/sessions/{waiting}/run/status.json").get_json()
    assert status["has_run"] is False
    assert client.get(f"/sessions/{waiting}/run/plots/time_drift").status_code == 404
    headers = live.token(client, "alice")
    files = client.get(f"/api/v1/sessions/{waiting}/files", headers=headers).get_json()
    assert files == {"session_id": waiting, "files": []}


def test_a_running_run_without_updates_is_flagged_stalled(live, client):
    summary = live.run_dir / "summary.json"
    data = json.loads(summary.read_text())
    data["updated_at"] = "2026-03-02T08:05:00Z"  # long ago, and still "running"
    summary.write_text(json.dumps(data))
    live.login(client, "alice")
    status = client.get(f"/sessions/{live.session_id}/run/status.json").get_json()
    assert status["stalled"] is True and status["keeping_up"] is False
    assert status["display"]["keeping_up"].startswith("no update for")
    live.app.config["RUN_STALL_AFTER_S"] = 10 * 365 * 86400.0
    status = client.get(f"/sessions/{live.session_id}/run/status.json").get_json()
    assert status["stalled"] is False and status["keeping_up"] is True


def test_session_api_reports_processing_progress(live, client):
    headers = live.token(client, "alice")
    body = client.get(f"/api/v1/sessions/{live.session_id}", headers=headers).get_json()
    processing = body["processing"]
    assert processing["movies_processed"] == 11 and processing["movies_failed"] == 1
    assert processing["resolution_A"] == 4.0 and processing["state"] == "running"


def test_listing_hashes_nothing_manifest_hashes_once(live, client):
    headers = live.token(client, "alice")
    sid = live.session_id
    listing = client.get(f"/api/v1/sessions/{sid}/files", headers=headers).get_json()["files"]
    manifest = next(f for f in listing if f["name"] == "manifest.json")
    assert manifest["size"] is None  # built on request, not while listing
    live.login(client, "alice")
    assert client.get(f"/sessions/{sid}/run").status_code == 200
    assert "cryofac.checksums" not in live.app.extensions  # nothing hashed yet
    assert (
        client.get(f"/api/v1/sessions/{sid}/files/MANIFEST.sha256", headers=headers).status_code
        == 200
    )
    cache = live.app.extensions["cryofac.checksums"]
    hashed = cache.computed
    assert hashed == len([f for f in listing if f["kind"] != "manifest"])
    client.get(f"/api/v1/sessions/{sid}/files/manifest.json", headers=headers)
    assert cache.computed == hashed  # every file version is hashed once


def test_run_page_shows_the_reconstructions_warnings(live, client):
    """A warning the reconstruction wrote (result.json → summary.json) is shown on the run
    page and in status.json; none: the box stays hidden."""
    import json

    live.login(client, "alice")
    html = client.get(f"/sessions/{live.session_id}/run").get_data(as_text=True)
    assert 'data-field="warnings" role="alert" hidden' in html
    path = live.run_dir / "summary.json"
    summary = json.loads(path.read_text())
    summary["warnings"] = ["The ab-initio model (in C4) does not look O-symmetric <check>"]
    path.write_text(json.dumps(summary))
    html = client.get(f"/sessions/{live.session_id}/run").get_data(as_text=True)
    assert "does not look O-symmetric &lt;check&gt;" in html
    assert 'role="alert" hidden' not in html
    status = client.get(f"/sessions/{live.session_id}/run/status.json").get_json()
    assert status["warnings"] == summary["warnings"]


def test_run_page_shows_the_reconstructions_progress_and_result_warnings(live, client):
    """The running reconstruction's progress.json (written by the pipeline's own
    Progress) shows as stage, fractions and ETA; when it finishes, its result.json's
    warnings show although the run summary has none yet; a broken file shows nothing."""
    import json

    from cryofac.run_folder import RECONSTRUCTION_STAGES
    from pipeline.reconstruction.progress import STAGE_WEIGHTS, Progress
    from portal.runs.reconstruction import STAGE_NAMES

    assert tuple(STAGE_NAMES) == RECONSTRUCTION_STAGES
    assert set(STAGE_WEIGHTS) <= set(RECONSTRUCTION_STAGES)  # the writer's stages are named
    live.login(client, "alice")
    page = f"/sessions/{live.session_id}/run"
    assert 'data-field="reconstruction" hidden' in client.get(page).get_data(as_text=True)

    folder = live.run_dir / "reconstruct" / "p3000"
    now = [0.0]
    progress = Progress(folder, clock=lambda: now[0])
    for stage, at in (("load", 0.0), ("class2d", 20.0), ("abinitio", 120.0)):
        now[0] = at
        progress.stage(stage)
    now[0] = 320.0
    progress.stage("refine")
    now[0] = 620.0
    # 300 s in refinement for 40 % of it: 450 s left; then post-processing at the pace so
    # far, (320 + 300 / 0.4) s for a weight of 0.98: 0.02 · 1,092 = 22 s
    progress.update("iteration 3 of 8", 0.4)  # 0.02 + 0.15 + 0.15 + 0.66 · 0.4
    html = client.get(page).get_data(as_text=True)
    assert 'data-field="reconstruction" hidden' not in html
    shown = "3D refinement (3,000 particles): 40 % of this stage, 58 % in all, about 8 min left"
    assert shown in html  # ETA 472 s
    assert 'value="0.584"' in html
    status = client.get(f"{page}/status.json").get_json()
    assert status["reconstruction"]["stage"] == "refine"
    assert status["reconstruction"]["fraction"] == 0.584
    assert status["display"]["reconstruction"] == shown

    # no word for a while: said so instead of an ETA
    data = json.loads((folder / "progress.json").read_text())
    data["updated"] = "2026-01-01T00:00:00Z"
    (folder / "progress.json").write_text(json.dumps(data))
    assert (
        "no progress for"
        in client.get(f"{page}/status.json").get_json()["display"]["reconstruction"]
    )
    # half-written (or not ours): no progress shown, no error
    (folder / "progress.json").write_text('{"stage": "refi')
    assert client.get(page).status_code == 200
    assert client.get(f"{page}/status.json").get_json()["reconstruction"] is None

    # finished: progress done, result.json with a warning the map may be wrong
    progress.finish()
    warning = "2 of the 3 ab-initio runs led refinement to a different map <check it>"
    (folder / "result.json").write_text(json.dumps({"resolution_A": 6.1, "warnings": [warning]}))
    html = client.get(page).get_data(as_text=True)
    assert 'data-field="reconstruction" hidden' in html
    assert "led refinement to a different map &lt;check it&gt;" in html
    assert json.loads((live.run_dir / "summary.json").read_text()).get("warnings") in (None, [])
    status = client.get(f"{page}/status.json").get_json()
    assert status["reconstruction"] is None and status["warnings"] == [warning]
