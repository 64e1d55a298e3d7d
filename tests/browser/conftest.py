"""A real portal served over HTTP on localhost, driven by Debian's headless Chromium.

Skipped when Playwright or ``/usr/bin/chromium`` is missing locally; with ``CI=true``
a missing browser fails instead (CI must run these). Screenshots go to
``test-artifacts/`` at the repository root.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def _chromium() -> str | None:
    configured = os.environ.get("CRYOFAC_CHROMIUM")
    if configured:
        return configured
    for path in CHROMIUM_CANDIDATES:
        if os.path.exists(path):
            return path
    return shutil.which("chromium")


def _missing(reason: str):
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason} (CI=true: the browser suite must run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    executable = _chromium()
    if executable is None:
        _missing("no Chromium found (apt-get install chromium)")
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=executable, headless=True)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, world with a firing alarm) of a portal served by a threaded WSGI server."""
    from werkzeug.serving import make_server

    from tests.portal_live.conftest import build_world, seed_environment

    tmp = tmp_path_factory.mktemp("browser")
    world = build_world(
        tmp, realistic=True, SERVER_NAME=None, WTF_CSRF_ENABLED=True, RUN_REFRESH_S=1
    )
    alarm_id = seed_environment(world, history_h=24)
    server = make_server("127.0.0.1", 0, world.app, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    world.app.config["EXTERNAL_URL"] = base  # links people copy (curl) are built from it
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base, world, alarm_id
    server.shutdown()
    thread.join(timeout=5)
    world.app.extensions["cryofac.engine"].dispose()


@pytest.fixture
def page(browser):
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, accept_downloads=True, locale="en-GB"
    )
    context.set_default_timeout(30_000)  # CI machines can be busy
    yield context.new_page()
    context.close()


def login(page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_images(page, selector: str, timeout_s: float = 60.0) -> None:
    """Wait until every image matching ``selector`` has loaded (CSP-safe: no eval)."""
    import time

    deadline = time.monotonic() + timeout_s
    script = (
        "(sel) => Array.from(document.querySelectorAll(sel))"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    while not page.evaluate(script, selector):
        if time.monotonic() > deadline:
            broken = page.evaluate(
                "(sel) => Array.from(document.querySelectorAll(sel))"
                ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)",
                selector,
            )
            raise AssertionError(f"images not loaded: {broken}")
        page.wait_for_timeout(100)
