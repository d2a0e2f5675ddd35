"""Behaviour that lives in a real server process: crash recovery, a responsive event loop."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.speech_helpers import jfk_reference, wer
from tests.support.client import wait_terminal
from tests.support.crash import AUTH, EVENT_IDS, Crash
from tests.support.server import ServerProcess
from tests.support.settings import DATA, TOKENS

# 53 s of real read speech, not repetitive; its first 20 s (`speech_20s`) are seconds of work,
# long enough to overlap probes and a shutdown, and quick to finish afterwards.
LONG_SPEECH = DATA / "sonnet1.flac"


@pytest.fixture(scope="module")
def speech_20s(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clip = tmp_path_factory.mktemp("speech") / "sonnet-20s.flac"
    subprocess.run(["sox", str(LONG_SPEECH), str(clip), "trim", "0", "20"], check=True)
    return clip


def log_lines(text: str) -> list[dict[str, object]]:
    lines = []
    for raw in text.splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


@pytest.mark.slow
def test_kill_9_mid_work_loses_nothing_and_completes_nothing_twice(
    live_server: ServerProcess, live_server_crash: Crash
) -> None:
    """The session's one kill -9 of the shared server (tests/support/crash.py): one worker, so
    exactly one event was mid-work; the events' outcomes and the log since they were sent."""
    server, crashed = live_server, live_server_crash
    ids = EVENT_IDS
    before = crashed.before
    assert before["completed"] >= 1 and before["queued"] >= 1, before
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
        records = {i: wait_terminal(http.get, i, timeout_s=300) for i in ids}

    assert {r["status"] for r in records.values()} == {"completed"}, records
    interrupted = [r for r in records.values() if r["attempts"] == 2]
    assert len(interrupted) == 1  # the event that was processing when the process died
    for event_id in ids:
        if "speech" in event_id:
            text = records[event_id]["result"]["transcript"]["text"]
            assert wer(jfk_reference(), text) <= 0.15
    log_text = server.log_path.read_bytes()[crashed.log_from :].decode(errors="replace")
    completions = Counter(
        line["event_id"]
        for line in log_lines(log_text)
        if line.get("msg") == "completed" and line.get("event_id") in ids
    )
    assert completions == Counter(ids), completions  # each completed exactly once
    whole_log = server.log_path.read_text(errors="replace")  # every test's, on the shared server
    for secret in TOKENS:
        assert secret not in whole_log
    assert crashed.audio[1000:1100] not in whole_log  # no audio in the logs


@pytest.mark.slow
def test_health_answers_while_a_long_transcription_runs(
    live_server: ServerProcess, speech_20s: Path
) -> None:
    clip = speech_20s
    server = live_server  # the shared one: this test only reads from it
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
        files = {"file": ("speech.flac", clip.read_bytes(), "audio/flac")}
        response = http.post(
            "/events/upload", files=files, data={"event_id": "long", "lookup": "false"}
        )
        assert response.status_code == 202
        while http.get("/events/long").json()["status"] != "processing":
            time.sleep(0.02)
        # Latency figures belong to bench/; here: every probe is answered, mid-work.
        answered = [httpx.get(f"{server.url}/health", timeout=10).status_code for _ in range(20)]
        still = http.get("/events/long").json()["status"]
        record = wait_terminal(http.get, "long", timeout_s=300)
    assert answered == [200] * 20
    assert still == "processing"  # the probes really overlapped the transcription
    assert record["status"] == "completed"
    assert record["result"]["transcript"]["duration_s"] > 15


@pytest.mark.slow
def test_graceful_shutdown_puts_unfinished_work_back(
    live_server: ServerProcess, speech_20s: Path
) -> None:
    """Ends the shared server with SIGTERM (one worker, 0.5 s of grace: conftest.py) and
    starts it again (same port, same database); reads only the log written since it began."""
    clip = speech_20s  # seconds of work: far more than the 0.5 s of grace
    server = live_server
    since = server.log_path.stat().st_size
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
        files = {"file": ("speech.flac", clip.read_bytes(), "audio/flac")}
        assert http.post("/events/upload", files=files, data={"event_id": "cut"}).status_code == 202
        while http.get("/events/cut").json()["status"] != "processing":
            time.sleep(0.02)
    assert server.proc is not None
    started = time.monotonic()
    server.stop()  # SIGTERM: the running transcription gets 0.5 s, then goes back in the queue
    assert time.monotonic() - started < 20

    server.start()  # and left running: the fixture stops it
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
        record = wait_terminal(http.get, "cut", timeout_s=300)
    assert record["status"] == "completed"
    assert record["attempts"] == 2  # interrupted once, then finished after the restart
    log = server.log_path.read_bytes()[since:].decode(errors="replace")
    # Put back by the shutdown itself, or by the pipeline when the signal (sent to the whole
    # process group, as systemd and this harness do) stopped the decoder first.
    assert "requeued running events at shutdown" in log or "put back: " in log
