"""The demo page in headless chromium against a real server: upload JFK, watch it arrive."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import httpx
import pytest

from tests.support.browser import Browser
from tests.support.server import ServerProcess
from tests.support.settings import DATA, ROOT, TOKENS

ARTIFACTS = ROOT / "tests" / "artifacts"  # git-ignored: the latest screenshot, for humans

PAGE_STATE = """JSON.stringify({
  status: document.getElementById("status").textContent,
  error: document.getElementById("error").textContent,
  segments: [...document.querySelectorAll("#segments li")].map((li) => li.textContent),
  matches: document.querySelectorAll("#matches li").length,
  types: window.skyhighDemo.messages.map((m) => m.type === "status" ? m.status : m.type),
})"""


def test_demo_page_is_self_contained(live_server: ServerProcess) -> None:
    response = httpx.get(f"{live_server.url}/demo")  # public: the page asks for the token
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    # No build step, no CDN: nothing is loaded from anywhere else.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", response.text)


@pytest.mark.needs("chromium")
@pytest.mark.slow
def test_upload_jfk_and_watch_the_transcript_arrive(
    live_server: ServerProcess, tmp_path: Path
) -> None:
    with Browser(tmp_path / "profile") as browser:
        browser.goto(f"{live_server.url}/demo")
        browser.evaluate(
            f"""const t = document.getElementById("token"); t.value = {json.dumps(TOKENS[0])};
            t.dispatchEvent(new Event("change")); true"""
        )
        browser.set_files("#file", DATA / "jfk.wav")
        browser.evaluate('document.getElementById("send-file").click(); true')
        browser.wait_for(
            'document.getElementById("status").textContent === "completed"', timeout_s=180
        )
        speech = json.loads(browser.evaluate(PAGE_STATE))
        shot = browser.screenshot(tmp_path / "demo.png")

        browser.evaluate(
            """document.getElementById("question").value = "Can I bring my cat in the cabin?";
            document.getElementById("send-question").click(); true"""
        )
        browser.wait_for(
            'document.getElementById("status").textContent === "completed"'
            " && document.querySelectorAll('#matches li').length > 0",
            timeout_s=60,
        )
        query = json.loads(browser.evaluate(PAGE_STATE))

    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "demo.png")
    print(f"\ndemo screenshot: {shot} (copy: {ARTIFACTS / 'demo.png'})")
    assert shot.stat().st_size > 10_000

    assert speech["error"] == ""
    text = " ".join(speech["segments"]).lower()
    assert "ask not what your country can do for you" in text, speech
    assert speech["matches"] > 0
    types = speech["types"]
    # Live over the WebSocket: segments arrived as messages before the outcome.
    assert "segment" in types and types.index("segment") < types.index("completed"), types
    assert query["error"] == "" and query["matches"] > 0 and query["segments"] == []
