"""POST /events/'s lean path (skyhigh.api.submit_path): it answers what it can exactly as the
FastAPI route does, and hands every other body to the route unchanged."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from router import SUBMIT_ROUTE
from skyhigh.api import auth
from skyhigh.api.submit_path import SubmitFastPath
from tests.support.settings import TOKENS

FAST = "application/json"  # the lean path takes exactly this content type
ROUTE = "application/json; charset=utf-8"  # the same body, answered by the FastAPI route


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _query(event_id: str, text: str = "Can I bring my dog?") -> dict[str, Any]:
    return {"event_id": event_id, "event_type": "query", "event_data": {"text": text, "k": 2}}


def _post(client: TestClient, body: bytes, content_type: str) -> tuple[int, Any, str | None]:
    response = client.post("/events/", content=body, headers={"Content-Type": content_type})
    return response.status_code, response.json(), response.headers.get("location")


def _same_answer(client: TestClient, make_body: Any) -> tuple[int, Any]:
    """Post one body through each path (own event ids), return the shared answer."""
    answers = []
    for content_type in (FAST, ROUTE):
        event_id = _id("sp")
        status, payload, location = _post(client, make_body(event_id), content_type)
        text = json.dumps(payload).replace(event_id, "<id>")
        answers.append((status, text, (location or "").replace(event_id, "<id>")))
    assert answers[0] == answers[1]
    return answers[0][0], json.loads(answers[0][1])


@pytest.mark.parametrize(
    ("make_body", "status"),
    [
        (lambda i: json.dumps(_query(i)).encode(), 202),
        (lambda i: json.dumps({**_query(i), "event_type": "nope"}).encode(), 422),
        (lambda i: json.dumps({"event_id": i, "event_type": "query"}).encode(), 422),
        (lambda i: json.dumps({**_query(i), "event_id": i + " bad"}).encode(), 422),
        (lambda i: json.dumps(_query(i, text="")).encode(), 422),
        (lambda i: b'{"event_id": "' + i.encode() + b'", "event_type": ', 422),
        (lambda i: b"[1, 2]", 422),
    ],
    ids=["valid", "unknown-type", "missing-data", "bad-id", "empty-text", "broken-json", "list"],
)
def test_both_paths_give_the_same_answer(client: TestClient, make_body: Any, status: int) -> None:
    assert _same_answer(client, make_body)[0] == status


def test_replays_and_conflicts_match_the_route(client: TestClient) -> None:
    for content_type in (FAST, ROUTE):
        event_id = _id("replay")
        body = json.dumps(_query(event_id)).encode()
        first = _post(client, body, content_type)
        assert first[0] == 202 and first[2] == f"/events/{event_id}"
        replay = _post(client, body, content_type)  # the same 202 (its status may have moved on)
        assert replay[0] == 202 and replay[2] == first[2]
        assert replay[1]["event_id"] == event_id
        other = json.dumps(_query(event_id, text="Another question")).encode()
        status, payload, _ = _post(client, other, content_type)
        assert status == 409 and "already used with a different body" in payload["detail"]


def _scope(client: TestClient, content_type: bytes) -> Scope:
    verifier = client.app_state["verifier"]
    return {
        "type": "http",
        "method": "POST",
        "path": "/events/",
        "headers": [(b"content-type", content_type)],
        "state": dict(client.app_state),
        auth.AUTH_SCOPE_KEY: auth.authenticate(verifier, TOKENS[0]),
    }


def _call(client: TestClient, scope: Scope, body: bytes) -> tuple[list[bytes], list[Message]]:
    """Run the layer with a recording app behind it: (bodies the app received, what was sent)."""
    behind: list[bytes] = []
    sent: list[Message] = []

    async def recording_app(_scope: Scope, receive: Receive, _send: Send) -> None:
        behind.append((await receive())["body"])

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    layer = SubmitFastPath(recording_app, route=SUBMIT_ROUTE)
    assert client.portal is not None
    client.portal.call(layer, scope, receive, send)
    return behind, sent


def test_a_valid_json_event_is_answered_in_front_of_the_router(client: TestClient) -> None:
    event_id = _id("lean")
    behind, sent = _call(
        client, _scope(client, b"application/json"), json.dumps(_query(event_id)).encode()
    )
    assert behind == []
    assert sent[0]["status"] == 202
    assert (b"location", f"/events/{event_id}".encode()) in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["status_url"] == f"/events/{event_id}"
    assert client.get(f"/events/{event_id}").status_code == 200  # stored


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (b"application/json", b'{"event_id": "x", "event_type": "nope", "event_data": {}}'),
        (b"application/json", b"not json"),
        (b"text/plain", json.dumps(_query("plain-1")).encode()),
        (b"application/json", json.dumps(_query("big-1", text="x" * 5000)).encode()),
    ],
    ids=["invalid", "unparseable", "other-content-type", "past-max-json-values"],
)
def test_other_bodies_reach_the_route_unchanged(
    client: TestClient, content_type: bytes, body: bytes
) -> None:
    behind, sent = _call(client, _scope(client, content_type), body)
    assert behind == [body] and sent == []
