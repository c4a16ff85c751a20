"""The station's page in a real browser: headless Debian chromium (driven by Playwright) on a real running station
fed by an image folder, a real mosquitto behind it.

The page must show a new result live (server-sent events), and a person must be able to sign in and say
"this was normal": the review then travels on MQTT and lands in the station's database. A screenshot
of the page and of the opened evidence is left in the test's tmp folder (look at it).
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from tests.harness.station import Broker, DaemonProcess, Probe, copy_images, page_port, patience, station_config

pytestmark = pytest.mark.slow  # the station and a real browser: not in -m "not slow"

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "browser-test-token"

if not CHROMIUM.is_file():
    pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium); "
                "the browser test drives it", allow_module_level=True)
sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright


@pytest.fixture
def station(board_bundle, boards, tmp_path):
    broker = Broker(tmp_path / "broker")
    broker.start()
    test = boards / "test"
    frames = copy_images([test / "good" / "000.png", test / "missing_component" / "001.png",
                          test / "good" / "003.png", test / "scratch" / "002.png", test / "good" / "004.png",
                          test / "too_dark" / "000.png"], tmp_path / "frames")
    (tmp_path / "token").write_text(TOKEN)
    camera = {"name": "cam", "bundle": str(board_bundle[0]), "mode": "continuous", "rate_hz": 2,
              "source": {"kind": "images", "path": str(frames[0].parent)}}
    config = station_config(broker.port, [camera], http={"enabled": True, "port": 0,
                                                         "token": {"file": str(tmp_path / "token")}})
    daemon = DaemonProcess(tmp_path / "station", config).start()
    probe = Probe(broker.port)
    probe.wait_for("/cam/alert", timeout=30)
    yield daemon, probe, f"http://127.0.0.1:{page_port(daemon)}"
    if daemon.process.poll() is None:
        daemon.stop()
    probe.close()
    broker.stop()


def test_the_page_shows_results_live_and_takes_a_review(station, tmp_path):
    daemon, probe, url = station
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: message.type == "error"  # a CSP violation or a failed load too
                    and errors.append(f"{message.text} {message.location}"))
            page.goto(url)
            _check_live_results(page, probe)
            _check_layout(page)
            inspection = _review_as_normal(page, tmp_path)
            assert errors == []
        finally:
            browser.close()
    review = probe.wait_for("/cam/review", lambda d: d["inspection"] == inspection)[0].data
    assert review["verdict"] == "normal" and review["reviewer"] == "Ines (token)"
    state = daemon.folder
    assert (state / "reviewed" / "cam" / "normal" / f"{inspection}.jpg").is_file()
    with closing(sqlite3.connect(state / "history.sqlite")) as db:
        assert db.execute("SELECT verdict, reviewer FROM reviews WHERE inspection = ?", (inspection,)).fetchall() == [
            ("normal", "Ines (token)")]
    assert TOKEN not in daemon.log
    for name in ("station-page.png", "station-review.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    print(f"screenshots: {tmp_path / 'station-page.png'}, {tmp_path / 'station-review.png'}")


def _check_live_results(page, probe) -> None:
    """The camera's card shows the station's latest result, a new one without a reload, with its live frame."""
    banner = page.locator(".camera[data-camera=cam] .verdict")
    # the card appears once the page has read /api/status: until then there is nothing to read
    page.wait_for_function("() => (document.querySelector('.camera .verdict')?.dataset.inspection ?? '') "
                           "!== ''", timeout=patience(10) * 1000)
    first = banner.get_attribute("data-inspection")
    # a result the station makes after the page has loaded shows up without a reload
    page.wait_for_function("(first) => document.querySelector('.camera .verdict').dataset.inspection !== first",
                           arg=first, timeout=patience(5) * 1000)
    shown = banner.get_attribute("data-inspection")
    result = probe.wait_for("/cam/result", lambda d: d["inspection"] == shown, timeout=5)[0].data
    word = banner.locator(".word").inner_text()
    assert word == ("OK" if result["label"] == "normal" else {"lighting": "LIGHTING", "blur": "BLUR"}.get(
        result["kind"], "DEFECT"))
    page.wait_for_function("() => document.querySelector('.camera img.live').naturalWidth > 0",
                           timeout=patience(5) * 1000)
    assert page.locator("#health").inner_text() == "RUNNING"
    assert page.locator("#broker").inner_text() == "broker connected"


def _review_as_normal(page, tmp_path) -> str:
    """An anomalous row opened, signed in with the token, reviewed as normal; returns its inspection id."""
    page.select_option("#filters select[name=verdict]", "anomalous")
    page.locator("#list tbody tr").first.wait_for(timeout=patience(5) * 1000)
    inspection = page.locator("#list tbody tr").first.get_attribute("data-id")  # rows keep arriving live
    page.screenshot(path=str(tmp_path / "station-page.png"), full_page=True)
    page.click(f"#list tbody tr[data-id='{inspection}']")
    page.locator("#detail").wait_for(state="visible")
    page.wait_for_function("() => document.querySelector('#d-frame').naturalWidth > 0",
                           timeout=patience(5) * 1000)
    page.click("#d-normal")  # not signed in yet: the login opens
    page.locator("#login").wait_for(state="visible")
    page.fill("#login input[name=name]", "Ines")
    page.fill("#login input[name=token]", TOKEN)
    page.click("#login-ok")
    page.click("#d-normal")
    page.wait_for_function("() => document.querySelector('#d-message').textContent.startsWith('Saved')",
                           timeout=patience(5) * 1000)
    assert "frame filed for retraining" in page.locator("#d-message").inner_text()
    page.screenshot(path=str(tmp_path / "station-review.png"))
    return inspection


def _check_layout(page) -> None:
    """What an operator reads: the longest verdict fits a narrow card, rows name their source file and a row
    without a picture says so (it was a black box)."""
    page.wait_for_function("() => document.querySelector('.camera .verdict .word').textContent === 'LIGHTING'",
                           timeout=patience(15) * 1000)  # the too-dark frame: 'lighting'
    # the narrowest card the grid makes (640 px and a margin): two cards a row on a 1600 px screen
    needed, room = page.evaluate("""() => { document.querySelector('.camera').style.width = '660px';
        const word = document.querySelector('.camera .verdict .word');
        return [word.scrollWidth, word.parentElement.clientWidth - 32]; }""")
    assert needed <= room, (needed, room)  # 318 px of LIGHTING in 264 before the banner sized its word
    page.evaluate("() => { document.querySelector('.camera').style.width = ''; }")
    sources = page.locator("#list tbody td.source").all_inner_texts()
    assert sources and all(re.fullmatch(r"\d{3}_\w+\.png", source) for source in sources), sources
    normal = page.locator("#list tbody tr", has=page.locator(".tag.ok")).first
    assert normal.locator(".nothumb").inner_text() == "no picture"  # evidence keeps anomalous frames only
