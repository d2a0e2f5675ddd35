"""One kill -9 of the shared live server, mid-work and mid-delivery, and its restart.

test_server checks that such a crash loses no event and completes none twice; test_webhooks
that a webhook delivery pending at the crash resumes after the restart. Each used to kill
and restart the server itself, and a restart costs a process start and a model load; the
session's `live_server_crash` fixture (conftest.py) runs this once for both, and each test
makes its own assertions on what happened.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.receivers import WebhookReceiver
from tests.support.server import ServerProcess
from tests.support.settings import DATA, TOKENS

AUTH = {"Authorization": f"Bearer {TOKENS[1]}"}
# At the kill: the first query done, the first clip mid-work, the rest queued behind it.
EVENT_IDS = ["crash-query-0", "crash-speech-0", "crash-speech-1", "crash-query-1", "crash-query-2"]
# A query whose callback answers 500 twice, then 200: pending after its first attempt.
HOOK_EVENT = "hook-restart"
HOOK_PATH = "/answer/500,500,200/restart"


@dataclass
class Crash:
    audio: str  # the clips' base64 (none of it may reach the log)
    log_from: int  # the server log's size before the first event was sent
    before: Counter[str]  # the events' statuses at the kill
    killed_at: float  # time.monotonic() of the kill


def body(event_id: str, audio: str, callback_url: str) -> dict[str, Any]:
    if event_id == HOOK_EVENT:
        data: dict[str, Any] = {"text": "pets", "callback_url": callback_url}
        return {"event_id": event_id, "event_type": "query", "event_data": data}
    if "speech" in event_id:
        data = {"audio_base64": audio, "language": "en"}
        return {"event_id": event_id, "event_type": "speech", "event_data": data}
    data = {"text": f"refund question {event_id}"}
    return {"event_id": event_id, "event_type": "query", "event_data": data}


def pending_retry(http: httpx.Client) -> bool:
    """The hook event's callback delivery was tried once or more and waits for its retry."""
    record = http.get(f"/events/{HOOK_EVENT}").json()
    return any(
        d["attempts"] >= 1 and d["status"] == "pending"
        for d in record.get("webhooks") or []
        if d["url"].endswith(HOOK_PATH)
    )


def crash(server: ServerProcess, receiver: WebhookReceiver) -> Crash:
    """Send the events, kill -9 the server once the hook's delivery waits for a retry and the
    worker is mid-way through the queue, and start it again (same port, same database)."""
    audio = base64.b64encode((DATA / "jfk.wav").read_bytes()).decode()
    log_from = server.log_path.stat().st_size
    try:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
            for event_id in [HOOK_EVENT, *EVENT_IDS]:
                sent = http.post("/events/", json=body(event_id, audio, receiver.url + HOOK_PATH))
                assert sent.status_code == 202, sent.text
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                statuses = [http.get(f"/events/{i}").json()["status"] for i in EVENT_IDS]
                mid_way = "completed" in statuses and "processing" in statuses
                if mid_way and pending_retry(http):
                    break
                time.sleep(0.02)
            else:
                raise AssertionError(f"never mid-way with a retry pending: {statuses}")
        server.kill()
        killed_at = time.monotonic()
        server.start()  # same database: recovery re-dispatches what the crash left behind
    finally:
        if server.proc is None or server.proc.poll() is not None:
            server.start()  # running again for the next test, whatever failed
    return Crash(audio, log_from, Counter(statuses), killed_at)
