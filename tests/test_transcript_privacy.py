"""Indexed transcripts stay with their owner, and queries fail with the caller's error, over
HTTP against a real server in JWT mode.

alice may write knowledge, bob has the default scopes (events:read events:write), root is an
admin. Each indexes the same speech; each then searches the transcripts table.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from skyhigh.domain.tenancy import owner_namespace
from tests.support.client import jfk_base64
from tests.support.principals import Signer
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

WRITER = "events:read events:write knowledge:write"
SIGNER = Signer("privacy-")


@pytest.fixture(scope="module")
def server(jwt_server: ServerProcess) -> ServerProcess:
    """The session's JWT-mode server (tests/support/principals.py)."""
    return jwt_server


def client(server: ServerProcess, sub: str, scope: str | None = None) -> httpx.Client:
    return SIGNER.client(server.url, sub, scope)


def run(http: httpx.Client, event_id: str, event_type: str, data: dict[str, Any]) -> Any:
    body = {"event_id": event_id, "event_type": event_type, "event_data": data}
    accepted = http.post("/events/", json=body)
    assert accepted.status_code == 202, accepted.text
    deadline = time.monotonic() + 180
    while True:
        record = http.get(f"/events/{event_id}").json()
        if record["status"] in ("completed", "failed"):
            return record
        assert time.monotonic() < deadline, record
        time.sleep(0.05)


def transcripts(http: httpx.Client, event_id: str, **options: Any) -> list[dict[str, Any]]:
    query = {"text": "ask what you can do for your country", "table": "transcripts", "k": 10}
    record = run(http, event_id, "query", {**query, **options})
    assert record["status"] == "completed", record
    return list(record["result"]["matches"])


def test_each_owner_finds_only_their_own_transcripts(server: ServerProcess) -> None:
    with (
        client(server, "alice", WRITER) as alice,
        client(server, "bob") as bob,
        client(server, "root", "admin") as root,
    ):
        speech = {"audio_base64": jfk_base64(), "index_transcript": True, "lookup": False}
        # Both use the same public id: their rows must not collide or mix.
        for http in (alice, bob):  # bob has no knowledge:write: his own rows need none
            assert run(http, "jfk-1", "speech", speech)["status"] == "completed"

        for http in (alice, bob):
            for mode in ("vector", "fulltext", "hybrid"):
                found = transcripts(http, f"q-{mode}", mode=mode)
                assert [m["id"] for m in found] == ["jfk-1"], (mode, found)
                assert found[0]["title"] == "Transcript of jfk-1"
                assert found[0]["metadata"]["event_id"] == "jfk-1"
                assert "owner" not in found[0]["metadata"]
            filtered = transcripts(http, "q-filter", filter={"event_id": "jfk-1"})
            assert len(filtered) == 1
        everything = transcripts(root, "q-root")
        assert [m["id"] for m in everything] == ["jfk-1", "jfk-1"]  # admin: both owners' rows
        shown = json.dumps(everything)
        for sub in ("alice", "bob"):
            assert owner_namespace(SIGNER.owner(sub)) not in shown and "~" not in shown

        # A principal that indexed nothing finds nothing.
        with client(server, "carol") as carol:
            assert transcripts(carol, "q-carol") == []


def test_filters_of_the_wrong_type_are_refused_at_intake(server: ServerProcess) -> None:
    with client(server, "dave") as dave:
        for filter_, column, expected in (
            ({"chunk": "abc"}, "chunk", "an integer"),
            ({"category": 1}, "category", "a string"),
        ):
            for mode in ("vector", "hybrid"):
                body = {
                    "event_id": f"bad-{column}-{mode}",
                    "event_type": "query",
                    "event_data": {"text": "bags", "filter": filter_, "mode": mode},
                }
                refused = dave.post("/events/", json=body)
                assert refused.status_code == 422, refused.text
                [error] = refused.json()["detail"]
                assert error["type"] == "invalid_filter"
                assert error["loc"] == ["body", "event_data", "filter"]
                assert f"'{column}'" in error["msg"] and expected in error["msg"]
        # A timestamp column: the transcripts table, made by the first test (alone, the lookup
        # step finds no table and says so).
        data = {"text": "country", "table": "transcripts", "filter": {"created_at": "2020"}}
        body = {"event_id": "bad-created-at", "event_type": "query", "event_data": data}
        refused = dave.post("/events/", json=body)
        if refused.status_code == 422:
            assert "'created_at' needs an ISO 8601 timestamp" in refused.text
        else:
            assert refused.status_code == 202, refused.text
            record = run(dave, "bad-created-at", "query", data)
            assert record["error"]["code"] == "table_not_found", record


PHRASE = re.compile(r"\bcheck\w*\s+bags?\b", re.IGNORECASE)


def test_a_phrase_search_works(server: ServerProcess) -> None:
    with client(server, "erin") as erin:
        for mode in ("fulltext", "hybrid"):
            record = run(
                erin, f"phrase-{mode}", "query", {"text": '"checked bags"', "mode": mode, "k": 3}
            )
            assert record["status"] == "completed", record
            matches = record["result"]["matches"]
            # Full text returns only rows holding the (stemmed) phrase; hybrid puts one first.
            shown = matches if mode == "fulltext" else matches[:1]
            assert shown, record
            assert all(PHRASE.search(f"{m['title']} {m['text']}") for m in shown), matches


def test_no_stack_trace_for_a_clients_mistake(server: ServerProcess) -> None:
    log = Path(server.log_path).read_text()
    assert "Traceback" not in log, log[-3000:]
