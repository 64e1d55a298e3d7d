"""End to end in Chromium: log in, book, see a rule error, watch a run, download a map,
acknowledge an alarm; screenshots of the calendar, a run page and the technician view."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

pytest.importorskip("playwright")

from playwright.sync_api import expect

from tests.browser.conftest import login, screenshot, wait_images

pytestmark = pytest.mark.slow


def _facility_tz() -> ZoneInfo:
    from cryofac.config import load_facility

    return ZoneInfo(load_facility()["facility"].get("timezone", "UTC"))


def _local(moment: datetime) -> str:
    return moment.astimezone(_facility_tz()).strftime("%Y-%m-%dT%H:%M")


def test_book_a_slot_and_see_the_rule_error(served, page):
    base, world, _ = served
    login(page, base, "alice", world.password)
    start = datetime.now(_facility_tz()).replace(minute=0, second=0, microsecond=0)
    start += timedelta(days=2)
    start = start.replace(hour=9)
    page.goto(f"{base}/bookings/new?instrument_id=glacios1")
    page.select_option("select[name=instrument_id]", "glacios1")
    page.select_option("select[name=project_id]", str(world.project_id))
    page.fill("input[name=start]", _local(start))
    page.fill("input[name=end]", _local(start + timedelta(hours=6)))
    page.click("form.card button[type=submit]")
    page.wait_for_url("**/bookings/mine")
    assert "Booked glacios1" in page.inner_text("main")

    # A slot in the past breaks a booking rule: the form says which, nothing is booked.
    past = start - timedelta(days=5)
    page.goto(f"{base}/bookings/new")
    page.select_option("select[name=instrument_id]", "glacios1")
    page.fill("input[name=start]", _local(past))
    page.fill("input[name=end]", _local(past + timedelta(hours=2)))
    page.click("form.card button[type=submit]")
    alert = page.locator("[role=alert]")
    alert.wait_for()
    assert alert.inner_text().strip().startswith("Too soon:")  # plain words, no rule identifier

    page.goto(f"{base}/calendar/glacios1?week={start.date().isoformat()}")
    assert "P-1" in page.inner_text("table.week")
    screenshot(page, "calendar")


def test_run_page_updates_live_and_downloads_the_map(served, page, tmp_path):
    base, world, _ = served
    login(page, base, "alice", world.password)
    page.click("nav >> text=Runs")
    screenshot(page, "runs_overview")
    page.click(f"a:text-is('#{world.session_id}')")
    page.wait_for_url(f"**/sessions/{world.session_id}/run")
    processed = page.locator("[data-display=movies_processed]")
    before = processed.inner_text()
    for img in page.locator("img[data-plot]").all():
        img.scroll_into_view_if_needed()
    wait_images(page, "img[data-plot]")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "run_page")

    # The workflow writes a new summary (atomically): the open page follows within seconds.
    summary_path = world.run_dir / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["movies_seen"] += 40
    summary["movies_processed"] += 40
    summary["particles"] += 6400
    tmp = summary_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary))
    tmp.replace(summary_path)
    expected = f"{summary['movies_processed']:,}"
    expect(processed).to_have_text(expected, timeout=30_000)
    expect(page.locator("[data-display=particles]")).to_have_text(f"{summary['particles']:,}")
    assert processed.inner_text() != before

    with page.expect_download() as info:
        page.click("a[download]:text-is('map.mrc')")
    download = info.value
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    assert download.suggested_filename == f"session{world.session_id}_map.mrc"
    assert target.read_bytes() == (world.run_dir / "refine" / "map.mrc").read_bytes()

    # A link for curl/wget: usable without the browser's cookie.
    page.locator("tr", has_text="map.mrc").locator("button").click()
    url = page.inner_text("#signed-url").strip()
    import urllib.request

    request = urllib.request.Request(url, headers={"Range": "bytes=0-1023"})
    with urllib.request.urlopen(request) as response:  # no cookie, no token
        assert response.status == 206
        assert response.read() == (world.run_dir / "refine" / "map.mrc").read_bytes()[:1024]


def test_acknowledge_an_alarm_in_the_technician_view(served, page):
    base, world, alarm_id = served
    login(page, base, "tech", world.password)
    page.goto(f"{base}/tech/")
    row = page.locator(f"tr[data-alarm-id='{alarm_id}']")
    assert "firing" in row.inner_text()
    for img in page.locator("#tech-view img").all():
        img.scroll_into_view_if_needed()
    wait_images(page, "#tech-view img")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "technician_view")
    row.locator("input[name=comment]").fill("AC compressor restarted, room recovering")
    row.locator("button").click()
    page.wait_for_load_state()
    assert f"Alarm {alarm_id} acknowledged" in page.inner_text("main")
    row = page.locator(f"tr[data-alarm-id='{alarm_id}']")
    assert "acknowledged" in row.inner_text()
    assert "AC compressor restarted" in row.inner_text()
