"""The operator page in a real headless Chromium: live data appears, the close button works."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from ops_browser import Browser, find_chromium, png_info
from ops_server import TOKEN


@pytest.fixture
async def browser(tmp_path) -> AsyncIterator[Browser]:
    executable, why_not = find_chromium()
    if executable is None:
        pytest.skip(f"no headless browser: {why_not}")
    launched = await Browser.launch(executable, tmp_path)
    yield launched
    await launched.close()


async def test_page_shows_live_state_and_closes_a_session(token_server, clients, browser, tmp_path,
                                                          record_screenshot):
    # a name with markup in it must show as text, never become an element
    alice, bob = await clients(token_server, "alice-operator-test", "<i>bob-operator-test</i>")
    session = await alice.add_session("Rehearsal room", protocol="socketio", description="browser test")
    await bob.join_session(session["sessionId"])
    await alice.declare_data_stream("pointcloud", "pc")

    page = await browser.new_page()
    await page.navigate(f"{token_server.url}/admin?token={TOKEN}")  # the page sends it as a Bearer header
    sessions = "document.querySelector('#sessions tbody').innerText"
    shown = ("Rehearsal room", "alice-operator-test", "<i>bob-operator-test</i>", "pointcloud")
    await page.wait_for(" && ".join(f"{sessions}.includes({json.dumps(text)})" for text in shown))
    assert await page.evaluate("document.querySelectorAll('main i').length") == 0
    await page.wait_for("document.querySelector('#workers tbody').innerText.includes('tcpreflector-')")
    await page.wait_for("document.querySelector('#log').childElementCount > 0")
    assert await page.evaluate("document.querySelector('#status').textContent") == "live"

    path = await page.screenshot(tmp_path / "admin.png")
    record_screenshot(path)
    width, height, distinct = png_info(path.read_bytes())
    assert (width, height) == (1280, 1000)
    assert path.stat().st_size > 20_000 and distinct > 50, "the screenshot looks blank"

    selector = f"button[data-action=close-session][data-session={json.dumps(session['sessionId'])}]"
    dialog = page.expect("Page.javascriptDialogOpening")
    release = await page.click(selector)
    opened = await dialog
    assert opened["type"] == "confirm" and "Rehearsal room" in opened["message"]
    await page.send("Page.handleJavaScriptDialog", {"accept": True})
    await release
    for client in (alice, bob):
        assert (await client.next_event("SessionClosed", timeout_s=5))[0] == "SessionClosed"
    await page.wait_for(f"!{sessions}.includes('Rehearsal room')")

    problems = [e for e in browser.events if e.get("method") == "Runtime.exceptionThrown"
                or "Content Security Policy" in json.dumps(e.get("params", {}))]
    assert not problems, problems
