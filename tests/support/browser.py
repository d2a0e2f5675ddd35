"""A tiny Chrome DevTools Protocol driver: headless Debian chromium, no extra packages.

Playwright's Python package downloads its browsers from a CDN and Selenium wants a matching
driver binary; the DevTools protocol needs neither: one WebSocket (the `websockets` package the
server already uses) and a handful of commands.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect


def chromium_binary() -> str | None:
    return next(
        (path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None
    )


def fake_microphone(recording: Path) -> tuple[str, ...]:
    """Chromium flags: getUserMedia is granted without asking and its microphone plays
    `recording` (a WAV file) in a loop."""
    return (
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={recording}",
        "--autoplay-policy=no-user-gesture-required",
    )


class Browser:
    """One headless chromium with one page (`extra_args`: more command-line flags).

    Usage::

        with Browser(tmp_path) as browser:
            browser.goto("http://127.0.0.1:8000/demo")
            title = browser.evaluate("document.title")
    """

    def __init__(self, profile: Path, *extra_args: str) -> None:
        binary = chromium_binary()
        if binary is None:
            raise RuntimeError("chromium is not installed")
        self._profile = profile
        # fmt: off
        self._proc = subprocess.Popen(
            [
                binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--mute-audio",
                "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                f"--user-data-dir={profile}", "--window-size=1100,1250", *extra_args,
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # fmt: on
        self._ids = itertools.count(1)
        self._exits = ExitStack()
        self._socket = self._exits.enter_context(self._connect_page())

    def _connect_page(self, timeout_s: float = 60) -> ClientConnection:
        port_file = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while not port_file.exists() or not port_file.read_text().strip():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        while True:
            targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("chromium has no page")
            time.sleep(0.1)
        return connect(pages[0]["webSocketDebuggerUrl"], max_size=None, proxy=None)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        self._socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:  # events arrive in between; only our answer matters
            message = json.loads(self._socket.recv(timeout=60))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def evaluate(self, expression: str, *, user_gesture: bool = False) -> Any:
        """The expression's value; `user_gesture`: run as if the user clicked (media, audio)."""
        answer = self.send(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            userGesture=user_gesture,
            awaitPromise=True,
        )
        if "exceptionDetails" in answer:
            raise RuntimeError(f"{expression!r} threw: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def goto(self, url: str, timeout_s: float = 30) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", timeout_s=timeout_s)

    def wait_for(self, condition: str, *, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.evaluate(condition):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout_s} s: {condition}")
            time.sleep(0.1)

    def set_files(self, selector: str, *paths: Path) -> None:
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.send("DOM.setFileInputFiles", nodeId=node, files=[str(p) for p in paths])

    def screenshot(self, dest: Path) -> Path:
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        dest.write_bytes(base64.b64decode(shot["data"]))
        return dest

    def close(self) -> None:
        self._exits.close()
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
