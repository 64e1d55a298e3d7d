"""The bar, over real HTTP: a 2 GiB map downloaded with curl, interrupted, resumed with
``curl -C -`` through an expiring signed link (no cookie), in constant server memory."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import threading
import tracemalloc

import pytest

from tests.portal_live.conftest import build_world

GiB = 1 << 30
MiB = 1 << 20

pytestmark = pytest.mark.slow


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_two_gib_map_resumes_with_curl_in_constant_memory(tmp_path):
    from werkzeug.serving import make_server

    world = build_world(tmp_path, SERVER_NAME=None)
    big = world.run_dir / "refine" / "big_map.mrc"
    markers = {0: b"HEAD", 256 * MiB - 2: b"EDGE", GiB: b"MIDL", 2 * GiB - 4: b"TAIL"}
    with open(big, "wb") as handle:
        handle.truncate(2 * GiB)
        for offset, marker in markers.items():
            handle.seek(offset)
            handle.write(marker)
    summary_path = world.run_dir / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["outputs"]["map"] = "refine/big_map.mrc"
    summary_path.write_text(json.dumps(summary))

    server = make_server("127.0.0.1", 0, world.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = world.app.test_client()
        headers = world.token(client, "alice")
        made = client.post(
            f"/api/v1/sessions/{world.session_id}/files/map.mrc/link", headers=headers
        )
        path = made.get_json()["url"].split("://", 1)[1].split("/", 1)[1]
        url = f"http://127.0.0.1:{server.server_port}/{path}"
        out = tmp_path / "map.mrc"

        rss_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        # The first attempt dies after 256 MiB (here: asks for exactly that much) ...
        subprocess.run(
            ["curl", "-sSf", "-r", f"0-{256 * MiB - 1}", "-o", str(out), url],
            check=True,
            timeout=120,
        )
        assert out.stat().st_size == 256 * MiB
        # ... and `curl -C -` continues from the end of the partial file to the last byte.
        subprocess.run(["curl", "-sSf", "-C", "-", "-o", str(out), url], check=True, timeout=300)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_growth_mib = (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kib
        ) / 1024
    finally:
        server.shutdown()
        thread.join(timeout=5)
        world.app.extensions["cryofac.engine"].dispose()

    assert out.stat().st_size == 2 * GiB
    with open(out, "rb") as handle:
        for offset, marker in markers.items():
            handle.seek(offset)
            assert handle.read(len(marker)) == marker, offset
    out.unlink()
    assert peak < 16 * MiB, f"server-side Python heap peaked at {peak / MiB:.1f} MiB"
    assert rss_growth_mib < 256, f"process RSS grew by {rss_growth_mib:.0f} MiB"
    print(
        f"2 GiB resumed download: heap peak {peak / MiB:.1f} MiB, RSS growth {rss_growth_mib:.0f} MiB"
    )
