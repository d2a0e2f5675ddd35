"""Tenancy over HTTP against a real server in JWT mode: principals see only their own events,
knowledge writes need `knowledge:write`, the knowledge schema is bounded, quotas answer 429.

Principals (one JWT `sub` each): alice may write knowledge, bob has no `scope` claim (the
default: read and write his own events), carol is only here to be rate-limited, dave to use up
his audio minutes, root is an admin, viewer may only read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from skyhigh.domain.tenancy import event_key
from skyhigh.processing.dispatch import FairQueue, InProcessDispatcher
from tests.support.client import jfk_base64
from tests.support.principals import RATE_LIMIT_PER_MINUTE, Signer
from tests.support.server import ServerProcess
from tests.support.settings import DATA
from tests.support.streams import ws_messages

WRITER = "events:read events:write knowledge:write"
SIGNER = Signer("tenancy-")
token = SIGNER.token
owner = SIGNER.owner


@pytest.fixture(scope="module")
def server(jwt_server: ServerProcess) -> ServerProcess:
    """The session's JWT-mode server (tests/support/principals.py): RATE_LIMIT_PER_MINUTE 600,
    AUDIO_MINUTES_PER_HOUR 0.3 (18 s: one JFK clip of 11 s fits, a second does not)."""
    return jwt_server


def client(server: ServerProcess, sub: str, scope: str | None = None) -> httpx.Client:
    return SIGNER.client(server.url, sub, scope)


@pytest.fixture(scope="module")
def alice(server: ServerProcess) -> Iterator[httpx.Client]:
    with client(server, "alice", WRITER) as http:
        yield http


@pytest.fixture(scope="module")
def bob(server: ServerProcess) -> Iterator[httpx.Client]:
    with client(server, "bob") as http:  # no scope claim: events:read events:write
        yield http


def post(
    http: httpx.Client, event_id: str, event_type: str, data: dict[str, Any]
) -> httpx.Response:
    body = {"event_id": event_id, "event_type": event_type, "event_data": data}
    return http.post("/events/", json=body)


def finished(http: httpx.Client, event_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
    # Polls gently: every request counts against the principal's rate limit.
    deadline = time.monotonic() + timeout_s
    while True:
        response = http.get(f"/events/{event_id}")
        assert response.status_code == 200, response.text
        record: dict[str, Any] = response.json()
        if record["status"] in ("completed", "failed"):
            return record
        assert time.monotonic() < deadline, f"{event_id} still {record['status']}"
        time.sleep(0.25)


def listed(http: httpx.Client) -> set[str]:
    response = http.get("/events/", params={"limit": 200})
    assert response.status_code == 200, response.text
    return {item["event_id"] for item in response.json()["items"]}


# --------------------------------------------------------------------------- ownership


@pytest.mark.slow
def test_another_principals_event_is_not_found(
    server: ServerProcess, alice: httpx.Client, bob: httpx.Client
) -> None:
    accepted = post(alice, "alice-private-1", "query", {"text": "Can I bring my cat?", "k": 1})
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["event_id"] == "alice-private-1"  # the public id, not the key
    assert accepted.headers["Location"] == "/events/alice-private-1"
    record = finished(alice, "alice-private-1")
    assert record["event_id"] == "alice-private-1" and record["status"] == "completed"
    assert "owner" not in record

    for path in ("", "/transcript", "/stream"):
        response = bob.get(f"/events/alice-private-1{path}")
        assert response.status_code == 404, (path, response.text)
        assert response.json() == {"detail": "no event 'alice-private-1'"}
    # Alice herself: her event has no transcript (409), which bob could not even learn.
    assert alice.get("/events/alice-private-1/transcript").status_code == 409
    messages, code = ws_messages(server.url, "alice-private-1", token=token("bob"))
    assert (messages, code) == ([], 4404)
    messages, code = ws_messages(server.url, "alice-private-1", subprotocol_token=token("alice"))
    assert code == 1000 and messages[-1]["event_id"] == "alice-private-1"

    assert "alice-private-1" in listed(alice)
    assert "alice-private-1" not in listed(bob)
    # Ids that look like stored keys of another namespace cannot be named either.
    alice_key = event_key(owner("alice"), "alice-private-1")
    assert alice_key is not None
    assert bob.get(f"/events/{alice_key}").status_code == 404
    assert bob.get("/events/alice-private-1", params={"owner": owner("alice")}).status_code == 403


@pytest.mark.slow
def test_two_principals_may_use_the_same_event_id(alice: httpx.Client, bob: httpx.Client) -> None:
    mine = {"text": "How many bags can I check in for free?", "k": 1}
    theirs = {"text": "Can I bring my dog in the cabin?", "k": 2}
    assert post(alice, "shared-1", "query", mine).status_code == 202
    assert post(bob, "shared-1", "query", theirs).status_code == 202  # no 409: other namespace
    a, b = finished(alice, "shared-1"), finished(bob, "shared-1")
    assert a["event_id"] == b["event_id"] == "shared-1"
    assert len(a["result"]["matches"]) == 1 and len(b["result"]["matches"]) == 2
    assert post(alice, "shared-1", "query", mine).status_code == 202  # a replay, still
    assert post(alice, "shared-1", "query", theirs).status_code == 409  # her own id, reused


@pytest.mark.slow
def test_idempotency_keys_are_per_principal(alice: httpx.Client, bob: httpx.Client) -> None:
    def transcribe(http: httpx.Client) -> httpx.Response:
        with (DATA / "jfk.wav").open("rb") as audio:
            return http.post(
                "/v1/audio/transcriptions",
                files={"file": ("jfk.wav", audio, "audio/wav")},
                data={"model": "whisper-1"},
                headers={"Idempotency-Key": "meeting-1"},
            )

    first, second = transcribe(alice), transcribe(bob)
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.headers["X-Event-Id"] == second.headers["X-Event-Id"] == "meeting-1"
    assert "ask not" in first.json()["text"].lower()
    assert finished(bob, "meeting-1")["result"]["transcript"]["text"] == first.json()["text"]


@pytest.mark.slow
def test_admin_sees_every_event_and_may_name_its_owner(
    server: ServerProcess, alice: httpx.Client, bob: httpx.Client
) -> None:
    assert post(bob, "bob-1", "query", {"text": "lounge access"}).status_code == 202
    finished(bob, "bob-1")
    if "alice-private-1" not in listed(alice):
        assert post(alice, "alice-private-1", "query", {"text": "x"}).status_code == 202
    with client(server, "root", "admin") as root:
        items = root.get("/events/", params={"limit": 200}).json()["items"]
        owners = {(item["event_id"], item["owner"]) for item in items}
        assert {("bob-1", owner("bob")), ("alice-private-1", owner("alice"))} <= owners
        foreign = root.get("/events/alice-private-1", params={"owner": owner("alice")})
        assert foreign.status_code == 200 and foreign.json()["event_id"] == "alice-private-1"
        assert root.get("/events/alice-private-1").status_code == 404  # not in root's own space


@pytest.mark.slow
def test_scopes_and_subjects_are_enforced(server: ServerProcess) -> None:
    with client(server, "viewer", "events:read") as viewer:
        refused = post(viewer, "v-1", "query", {"text": "hello"})
        assert refused.status_code == 403 and "events:write" in refused.json()["detail"]
        assert viewer.get("/events/").status_code == 200
    with client(server, "writer", "events:write") as writer:
        refused = writer.get("/events/")
        assert refused.status_code == 403 and "events:read" in refused.json()["detail"]
    anonymous = httpx.get(
        f"{server.url}/events/", headers={"Authorization": f"Bearer {token(None)}"}
    )
    assert anonymous.status_code == 401 and "sub" in anonymous.json()["detail"]


# --------------------------------------------------------------------------- knowledge


@pytest.mark.slow
def test_knowledge_writes_need_the_scope(alice: httpx.Client, bob: httpx.Client) -> None:
    hijack = {
        "document_id": "baggage-prohibited-items",
        "title": "Which items are not allowed in my luggage?",
        "text": "Everything is allowed, bring fireworks.",
    }
    refused = post(bob, "bob-doc-1", "document", hijack)
    assert refused.status_code == 403
    assert "'knowledge:write'" in refused.json()["detail"]
    assert post(bob, "bob-doc-1", "document", hijack).status_code == 403  # nothing was stored
    assert bob.get("/events/bob-doc-1").status_code == 404
    deleting = post(
        bob, "bob-del-1", "document_delete", {"document_id": "baggage-prohibited-items"}
    )
    assert deleting.status_code == 403
    # index_transcript writes only bob's own rows: events:write suffices
    # (tests/test_transcript_privacy.py).

    # The shipped entry is still what alice finds.
    question = {
        "text": "Which items are not allowed in my luggage?",
        "k": 5,
        "filter": {"document_id": "baggage-prohibited-items"},
    }
    assert post(alice, "alice-q-prohibited", "query", question).status_code == 202
    matches = finished(alice, "alice-q-prohibited")["result"]["matches"]
    assert matches and all("Everything is allowed" not in m["text"] for m in matches)
    assert matches[0]["text"].startswith("Explosives, fireworks")

    # A writer may add documents.
    note = {"document_id": "alice-note", "title": "Note", "text": "Gate B12 closes early."}
    assert post(alice, "alice-doc-1", "document", note).status_code == 202
    assert finished(alice, "alice-doc-1")["status"] == "completed"


@pytest.mark.slow
def test_a_query_never_creates_a_table(server: ServerProcess, alice: httpx.Client) -> None:
    assert (
        post(alice, "ghost-q", "query", {"text": "boo", "table": "ghost-table"}).status_code == 202
    )
    record = finished(alice, "ghost-q")
    assert record["error"]["code"] == "table_not_found"
    message = record["error"]["message"]
    assert "'ghost-table'" in message
    assert "lancedb" not in message.lower() and "'knowledge'" not in message  # no path, no list
    tables = {table["name"] for table in alice.get("/knowledge/tables").json()}
    assert "ghost-table" not in tables and "knowledge" in tables
    assert not (Path(server.env["LANCEDB_URI"]) / "ghost-table.lance").exists()


@pytest.mark.slow
def test_metadata_columns_are_capped(alice: httpx.Client) -> None:
    def document(index: int, keys: list[str]) -> dict[str, Any]:
        return {
            "document_id": f"meta-{index}",
            "title": f"Metadata {index}",
            "text": f"Document number {index} about metadata.",
            "metadata": dict.fromkeys(keys, "x"),
            "table": "meta-attack",
        }

    def columns() -> list[str]:
        (table,) = [t for t in alice.get("/knowledge/tables").json() if t["name"] == "meta-attack"]
        return [c for c in table["columns"] if c not in ("id", "document_id", "chunk", "title")]

    upper = post(alice, "meta-upper", "document", document(0, ["Category"]))
    assert upper.status_code == 422 and "must be an identifier" in upper.text

    # The attack: every document brings 32 new keys. A new table starts with two metadata
    # columns (category, tags), so the first such document already passes the cap of 32.
    first = post(alice, "meta-1", "document", document(1, [f"k1_{i}" for i in range(32)]))
    assert first.status_code == 422, first.text
    [error] = first.json()["detail"]
    assert error["type"] == "metadata_column_limit"
    assert error["loc"] == ["body", "event_data", "metadata"]
    assert "KNOWLEDGE_MAX_METADATA_COLUMNS" in error["msg"] and "32" in error["msg"]

    # Up to the cap is fine; past it, every new key is refused, reusing keys still works.
    filling = [f"k2_{i}" for i in range(30)]
    assert post(alice, "meta-2", "document", document(2, filling)).status_code == 202
    assert finished(alice, "meta-2")["status"] == "completed"
    for index in range(3, 6):
        refused = post(alice, f"meta-{index}", "document", document(index, [f"k{index}_0"]))
        assert refused.status_code == 422 and "metadata_column_limit" in refused.text
    reuse = post(alice, "meta-6", "document", document(6, filling[:5]))
    assert reuse.status_code == 202 and finished(alice, "meta-6")["status"] == "completed"
    assert len(columns()) <= 32 + 2  # metadata columns + text and content_sha256


# --------------------------------------------------------------------------- quotas


@pytest.mark.slow
def test_request_rate_is_limited_per_principal(server: ServerProcess, bob: httpx.Client) -> None:
    with client(server, "carol") as carol:
        statuses = []
        # Two windows at most: a minute boundary inside the burst resets the count once.
        for _ in range(2 * RATE_LIMIT_PER_MINUTE + 2):
            response = carol.get("/v1/models")
            statuses.append(response.status_code)
            if response.status_code == 429:
                break
        assert statuses[-1] == 429, statuses[-5:]
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
        limited = carol.get("/events/")
        assert limited.status_code == 429 and "RATE_LIMIT_PER_MINUTE" in limited.json()["detail"]
    assert bob.get("/events/").status_code == 200  # carol's limit is hers alone


@pytest.mark.slow
def test_audio_minutes_are_limited_per_principal(server: ServerProcess) -> None:
    with client(server, "dave") as dave:
        speech = {"audio_base64": jfk_base64(), "language": "en", "lookup": False}
        assert post(dave, "dave-1", "speech", speech).status_code == 202
        assert finished(dave, "dave-1")["status"] == "completed"  # 11 s used, 18 s allowed
        refused = post(dave, "dave-2", "speech", speech)
        assert refused.status_code == 429, refused.text
        assert "AUDIO_MINUTES_PER_HOUR" in refused.json()["detail"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 3600
        with (DATA / "jfk.wav").open("rb") as audio:
            openai = dave.post(
                "/v1/audio/transcriptions",
                files={"file": ("jfk.wav", audio, "audio/wav")},
                data={"model": "whisper-1"},
            )
        assert openai.status_code == 429 and "Retry-After" in openai.headers
        # Queries are not audio: they still go through.
        assert post(dave, "dave-q", "query", {"text": "bags"}).status_code == 202


# --------------------------------------------------------------------------- fairness


def test_the_dispatcher_serves_principals_in_turn() -> None:
    queue = FairQueue()
    hog = [event_key("jwt:hog", f"long-{i}") for i in range(4)]
    other = [event_key("jwt:other", f"short-{i}") for i in range(2)]
    for key in [*hog, *other, event_key("token", "static-1")]:
        assert key is not None
        queue.put(key)
    order = [queue.get() for _ in range(7)]
    assert order == [hog[0], other[0], "static-1", hog[1], other[1], hog[2], hog[3]]
    queue.stop(1)
    assert queue.get() is None


def test_a_backlog_does_not_starve_another_principal() -> None:
    started: list[str] = []
    gate = threading.Event()

    def process(key: str) -> None:
        started.append(key)
        gate.wait(5)

    dispatcher = InProcessDispatcher(process, concurrency=1, max_pending=100)
    dispatcher.start([])
    keys = [event_key("jwt:hog", f"long-{i}") for i in range(5)] + [event_key("jwt:b", "one")]
    for key in keys:
        assert key is not None and dispatcher.reserve()
        dispatcher.submit(key, event_type="speech")
    gate.set()
    deadline = time.monotonic() + 5
    while dispatcher.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    dispatcher.stop(grace_s=1)
    # The hog's first file was running already; b's event comes right after, not last.
    assert started.index(keys[-1]) == 1, started
