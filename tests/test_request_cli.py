"""request.py end to end, as a subprocess against a real server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import ServerProcess
from tests.support.settings import DATA, ROOT, TOKENS

pytestmark = pytest.mark.slow


def run(
    server: ServerProcess, tmp: Path, *args: str, token: str = TOKENS[0]
) -> subprocess.CompletedProcess[str]:
    env = {"SKYHIGH_URL": server.url, "API_TOKEN": token, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "request.py", *args, "--env-file", str(tmp / "none.env")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_stream_shows_segments_live_then_the_outcome(
    live_server: ServerProcess, tmp_path: Path
) -> None:
    done = run(
        live_server, tmp_path, "--audio", str(DATA / "jfk.wav"), "--stream", "--format", "srt"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("202 accepted: event ")
    segment_lines = [i for i, line in enumerate(lines) if line.startswith("  [0:0")]
    outcome_line = next(i for i, line in enumerate(lines) if ": completed (attempts 1)" in line)
    assert segment_lines and max(segment_lines) < outcome_line  # live, before the outcome
    assert "ask not what your country can do for you" in done.stdout.lower()
    assert "00:00:00,000 --> " in done.stdout  # --format srt


def test_json_lines_for_scripts_and_exit_codes(live_server: ServerProcess, tmp_path: Path) -> None:
    done = run(live_server, tmp_path, "--text", "Can I bring my cat?", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    documents = [json.loads(line) for line in done.stdout.splitlines()]
    assert documents[0]["status_code"] == 202
    assert documents[-1]["status"] == "completed" and documents[-1]["result"]["matches"]

    refused = run(live_server, tmp_path, "--text", "hi", token="wrong")
    assert refused.returncode == 1 and refused.stdout.startswith("401 refused: ")

    streamed = run(live_server, tmp_path, "--text", "hi", "--stream")
    assert streamed.returncode == 0 and "event " in streamed.stdout, streamed.stdout

    document = tmp_path / "lounge-policy.txt"
    document.write_text("Gold members may bring one guest into partner lounges.")
    added = run(live_server, tmp_path, "--document", str(document), "--wait")
    assert added.returncode == 0, added.stdout + added.stderr
    assert ": completed " in added.stdout

    unreachable = subprocess.run(
        [sys.executable, "request.py", "--text", "hi", "--env-file", str(tmp_path / "x.env")],
        cwd=ROOT,
        env={"SKYHIGH_URL": "http://127.0.0.1:9", "API_TOKEN": "t", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreachable.returncode == 1 and "cannot talk to http://127.0.0.1:9" in unreachable.stderr


def test_batch_sends_everything_and_summarises(live_server: ServerProcess, tmp_path: Path) -> None:
    shutil.copy(DATA / "jfk.wav", tmp_path / "jfk.wav")
    lines = [
        json.dumps({"text": "How many bags can I check in for free?"}),
        json.dumps({"audio": "jfk.wav", "language": "en"}),
        "# comments and blank lines are skipped",
        "",
        json.dumps({"event_type": "query", "event_data": {"text": "x", "table": "missing"}}),
        json.dumps({"event_type": "query", "event_data": {"k": 3}}),  # no text: refused (422)
        "not json",
    ]
    batch = tmp_path / "events.jsonl"
    batch.write_text("\n".join(lines) + "\n")

    done = run(live_server, tmp_path, "--batch", str(batch))
    assert done.returncode == 1, done.stdout  # one failed, two refused
    assert "sent 5 events" in done.stdout and "3 accepted, 2 refused" in done.stdout
    assert "2 completed, 1 failed" in done.stdout
    assert "table_not_found" in done.stdout and "422" in done.stdout
    assert "sending" in done.stderr  # the progress bar

    as_json = run(live_server, tmp_path, "--batch", str(batch), "--json", "--no-wait")
    summary = json.loads(as_json.stdout.splitlines()[-1])
    assert summary["summary"]["accepted"] == 3 and summary["summary"]["refused"] == 2
