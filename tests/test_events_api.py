"""The /events contract over HTTP, with the app's lifespan (store, models, workers) running."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from main import create_app
from skyhigh.api.request_ids import RequestIds
from skyhigh.processing.registry import EVENT_TYPES
from tests.support.client import wait_terminal, without_auth
from tests.support.settings import AUTH, make_settings

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def new_id(prefix: str = "evt") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def query_event(
    event_id: str, text: str = "How many bags can I check in for free?", **data: Any
) -> dict[str, Any]:
    return {"event_id": event_id, "event_type": "query", "event_data": {"text": text, **data}}


def test_query_event_is_accepted_then_answered_from_the_knowledge_base(client: TestClient) -> None:
    event_id = new_id()
    response = client.post("/events/", json=query_event(event_id, k=3))
    assert response.status_code == 202, response.text
    assert response.json() == {
        "message": "Data received!",
        "event_id": event_id,
        "status": "queued",
        "status_url": f"/events/{event_id}",
    }
    assert response.headers["Location"] == f"/events/{event_id}"

    record = wait_terminal(client.get, event_id)
    assert record["status"] == "completed", record
    assert record["attempts"] == 1
    assert record["error"] is None
    matches = record["result"]["matches"]
    assert len(matches) == 3
    assert matches[0]["id"] == "baggage-checked-allowance#0"
    assert matches[0]["table"] == "knowledge"
    assert matches[0]["metadata"]["category"] == "baggage"
    assert matches[0]["score"] > matches[2]["score"]
    assert record["created_at"] <= record["started_at"] <= record["finished_at"]


def test_query_filter_returns_only_matching_rows(client: TestClient) -> None:
    event_id = new_id()
    body = query_event(event_id, "Can I bring my dog?", k=10, filter={"category": "pets"})
    assert client.post("/events/", json=body).status_code == 202
    record = wait_terminal(client.get, event_id)
    matches = record["result"]["matches"]
    assert matches, record
    assert {m["metadata"]["category"] for m in matches} == {"pets"}


def test_filter_on_unknown_column_is_refused_at_intake(client: TestClient) -> None:
    event_id = new_id()
    body = query_event(event_id, filter={"nope": "x"})
    response = client.post("/events/", json=body)
    assert response.status_code == 422, response.text
    assert "category" in response.text  # names the columns that exist
    assert client.get(f"/events/{event_id}").status_code == 404  # nothing was accepted


def test_injection_attempt_in_filter_value_matches_nothing(client: TestClient) -> None:
    event_id = new_id()
    body = query_event(event_id, filter={"category": "x' OR '1'='1"})
    assert client.post("/events/", json=body).status_code == 202
    record = wait_terminal(client.get, event_id)
    assert record["status"] == "completed"
    assert record["result"]["matches"] == []


def test_filter_with_a_non_identifier_column_is_rejected_at_intake(client: TestClient) -> None:
    body = query_event(new_id(), filter={"category = 'x' OR 1": "y"})
    response = client.post("/events/", json=body)
    assert response.status_code == 422
    assert "not a plain column name" in response.text


def test_unknown_table_fails_with_table_not_found(client: TestClient) -> None:
    event_id = new_id()
    assert client.post("/events/", json=query_event(event_id, table="nope")).status_code == 202
    record = wait_terminal(client.get, event_id)
    assert record["error"]["code"] == "table_not_found"
    assert "knowledge" in record["error"]["message"]


def test_unknown_event_type_lists_the_supported_types(client: TestClient) -> None:
    body = {"event_id": new_id(), "event_type": "telepathy", "event_data": {}}
    response = client.post("/events/", json=body)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "event_type"]
    assert "query" in error["msg"] and "speech" in error["msg"]


def test_payload_errors_point_at_the_field_to_fix(client: TestClient) -> None:
    response = client.post("/events/", json=query_event(new_id(), k=500))
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "event_data", "k"]
    assert "50" in error["msg"]

    response = client.post(
        "/events/", json={"event_id": new_id(), "event_type": "query", "event_data": {"k": 3}}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "event_data", "text"]

    response = client.post("/events/", json=query_event(new_id(), tpyo=True))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "event_data", "tpyo"]


def test_bad_event_ids_are_rejected(client: TestClient) -> None:
    for bad in ["", "-starts-with-dash", "has space", "x" * 129, "semi;colon"]:
        response = client.post("/events/", json=query_event(bad))
        assert response.status_code == 422, bad
        assert response.json()["detail"][0]["loc"] == ["body", "event_id"]
    assert client.post("/events/", json=query_event("A." + "x" * 126)).status_code == 202


def test_validation_errors_never_echo_the_input(client: TestClient) -> None:
    secret_blob = "Zm9v" * 1000
    body = {
        "event_id": new_id(),
        "event_type": "speech",
        "event_data": {"audio_base64": secret_blob, "audio_url": "https://x.example/a.wav"},
    }
    response = client.post("/events/", json=body)
    assert response.status_code == 422
    assert secret_blob not in response.text


def test_replay_with_identical_body_is_processed_once(client: TestClient) -> None:
    event_id = new_id()
    body = query_event(event_id, k=2)
    first = client.post("/events/", json=body)
    assert first.status_code == 202
    wait_terminal(client.get, event_id)
    # Same body with keys in another order is the same event.
    replay = client.post(
        "/events/",
        json={
            "event_data": {"k": 2, "text": body["event_data"]["text"]},
            "event_type": "query",
            "event_id": event_id,
        },
    )
    assert replay.status_code == 202
    assert replay.json()["status"] == "completed"
    record = client.get(f"/events/{event_id}").json()
    assert record["attempts"] == 1


def test_same_id_with_a_different_body_is_a_conflict(client: TestClient) -> None:
    event_id = new_id()
    assert client.post("/events/", json=query_event(event_id, "first")).status_code == 202
    response = client.post("/events/", json=query_event(event_id, "second"))
    assert response.status_code == 409
    assert "different body" in response.json()["detail"]
    assert client.get(f"/events/{event_id}").json()["event_type"] == "query"


def test_body_over_the_limit_is_413_without_reading_it(client: TestClient) -> None:
    big = {
        "event_id": new_id(),
        "event_type": "query",
        "event_data": {"text": "x", "pad": "y" * (3 * 1024 * 1024)},
    }
    response = client.post("/events/", json=big)
    assert response.status_code == 413
    assert "MAX_BODY_BYTES" in response.json()["detail"]

    def chunks() -> Any:  # no Content-Length: the limit applies while streaming
        yield b'{"event_id": "chunked", "event_type": "query", "event_data": {"text": "'
        for _ in range(40):
            yield b"z" * (64 * 1024)
        yield b'"}}'

    response = client.post(
        "/events/", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert client.get("/events/chunked").status_code == 404


def test_unknown_event_is_404(client: TestClient) -> None:
    response = client.get("/events/does-not-exist")
    assert response.status_code == 404
    assert "does-not-exist" in response.json()["detail"]


def test_list_is_newest_first_and_cursor_paginated(client: TestClient) -> None:
    kind = f"page-{uuid.uuid4().hex[:6]}"
    ids = [new_id(kind) for _ in range(5)]
    for event_id in ids:
        assert client.post("/events/", json=query_event(event_id, kind)).status_code == 202
    for event_id in ids:
        wait_terminal(client.get, event_id)

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, "event_type": "query"}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/events/", params=params).json()
        seen += [item["event_id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    ours = [event_id for event_id in seen if event_id.startswith(kind)]
    assert ours == list(reversed(ids))
    assert len(seen) == len(set(seen))
    assert pages >= 3

    completed = client.get("/events/", params={"status": "completed", "limit": 200}).json()
    assert all(item["status"] == "completed" for item in completed["items"])
    assert client.get("/events/", params={"cursor": "garbage"}).status_code == 422
    assert client.get("/events/", params={"status": "nonsense"}).status_code == 422


def test_full_queue_answers_503_with_retry_after_and_stores_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_pending_events=0, retry_after_s=7)
    with TestClient(create_app(settings), headers=AUTH) as full:
        response = full.post("/events/", json=query_event("not-stored"))
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "7"
        assert "MAX_PENDING_EVENTS" in response.json()["detail"]
        assert full.get("/events/not-stored").status_code == 404


def test_public_probes_status_and_metrics(client: TestClient) -> None:
    with without_auth(client) as public:
        check_public_routes(public)

    event_id = new_id()
    client.post("/events/", json=query_event(event_id))
    wait_terminal(client.get, event_id)
    with without_auth(client) as public:
        metrics = public.get("/metrics").text
    assert 'skyhigh_events_accepted_total{event_type="query"}' in metrics
    assert 'skyhigh_events_completed_total{event_type="query"}' in metrics
    assert 'skyhigh_step_duration_seconds_count{event_type="query",step="lookup"}' in metrics
    assert "skyhigh_queue_depth" in metrics


def check_public_routes(public: TestClient) -> None:
    assert public.get("/health").json() == {"status": "ok"}
    ready = public.get("/ready")
    assert ready.status_code == 200 and ready.json()["checks"]["store"] == "ok"
    status = public.get("/status").json()
    assert status["status"] == "online"
    assert status["models"]["whisper"]["name"] == "tiny.en"
    assert status["models"]["embedding"]["dimension"] == 384
    assert set(status["event_types"]) >= {"query", "speech"}
    assert public.get("/events/").status_code == 401


def test_openapi_documents_bearer_auth_and_an_example_per_event_type(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    post = schema["paths"]["/events/"]["post"]
    assert post["security"] == [{"HTTPBearer": []}]
    examples = post["requestBody"]["content"]["application/json"]["examples"]
    assert {e["value"]["event_type"] for e in examples.values()} == set(EVENT_TYPES)
    for name in ("QueryPayload", "SpeechPayload", "DocumentPayload", "DocumentDeletePayload"):
        assert name in schema["components"]["schemas"]
    assert "/status" in schema["paths"] and "security" not in schema["paths"]["/health"]["get"]
    for page in ("/docs", "/redoc"):
        response = client.get(page)
        assert response.status_code == 200 and "openapi.json" in response.text


def test_request_id_is_echoed(client: TestClient) -> None:
    response = client.get("/health", headers={"X-Request-ID": "req-123"})
    assert response.headers["x-request-id"] == "req-123"
    made = [client.get("/health").headers["x-request-id"] for _ in range(3)]
    assert len(set(made)) == 3 and all(_SAFE_ID.match(i) for i in made), made
    # One process, one random prefix; the counter tells its requests apart.
    assert len({i.rsplit("-", 1)[0] for i in made}) == 1


def test_request_ids_differ_across_processes() -> None:
    # A new process (or a forked child, via reseed) draws a new prefix, so ids never repeat.
    first, second = RequestIds(), RequestIds()
    assert first.next().split("-")[0] != second.next().split("-")[0]
    before = first.next()
    first.reseed()
    after = first.next()
    assert before.split("-")[0] != after.split("-")[0] and after.endswith("-1")


def test_auth_header_from_client_default(client: TestClient) -> None:
    assert client.headers["Authorization"] == AUTH["Authorization"]
