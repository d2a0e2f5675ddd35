"""Indexed diarized transcripts are filterable by speaker, and `/v1/models` names the diarize
model.

A real two-speaker conversation (tests/conversations.py: JFK and the Sonnet reader taking turns)
goes through the in-process app with real tiny.en weights, the real speaker model and real
LanceDB, with `index_transcript` (the session's `diarized` event, tests/support/diarized.py);
queries on the transcripts table filtered by speaker must return exactly that speaker's turns
of the event's own result.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.support.client import wait_terminal
from tests.support.diarized import DIARIZED_EVENT_ID

EVENT_ID = DIARIZED_EVENT_ID


def query(client: TestClient, event_id: str, filter_: dict[str, Any]) -> list[dict[str, Any]]:
    data = {"text": "what you can do", "table": "transcripts", "k": 50, "filter": filter_}
    body = {"event_id": event_id, "event_type": "query", "event_data": data}
    response = client.post("/events/", json=body)
    assert response.status_code == 202, response.text
    record = wait_terminal(client.get, event_id, timeout_s=60)
    assert record["status"] == "completed", record
    return list(record["result"]["matches"])


def turns(segments: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The result's segments as speaker turns: consecutive segments of one speaker joined."""
    out: list[tuple[str, str]] = []
    for segment in segments:
        text = segment["text"].strip()
        if not text:
            continue
        if out and out[-1][0] == segment["speaker"]:
            out[-1] = (segment["speaker"], f"{out[-1][1]} {text}")
        else:
            out.append((segment["speaker"], text))
    return out


def test_a_speaker_filter_returns_only_that_speakers_words(
    client: TestClient, diarized: dict[str, Any]
) -> None:
    transcript = diarized["result"]["transcript"]
    names = [s["speaker"] for s in transcript["speakers"]]
    assert "Reader" in names and len(names) == 2
    expected = turns(transcript["segments"])
    assert len(expected) >= 4  # the speakers take turns: several rows each

    said: dict[str, str] = {}
    for n, speaker in enumerate(names):
        found = query(client, f"speaker-q-{n}", {"speaker": speaker, "event_id": EVENT_ID})
        assert {m["metadata"]["speaker"] for m in found} == {speaker}
        assert {m["id"] for m in found} == {EVENT_ID}
        assert sorted(m["text"] for m in found) == sorted(
            text for who, text in expected if who == speaker
        )
        said[speaker] = " ".join(m["text"] for m in found).lower()
    # The rows hold what each person said: JFK's words are not the Reader's.
    jfk = next(name for name in names if name != "Reader")
    assert "country" in said[jfk] and "country" not in said["Reader"]
    # Both filters together cover the transcript's words.
    assert sum(len(text.split()) for text in said.values()) == len(transcript["text"].split())


def test_an_unknown_speaker_matches_no_rows(client: TestClient, diarized: dict[str, Any]) -> None:
    assert query(client, "speaker-q-nobody", {"speaker": "Nobody", "event_id": EVENT_ID}) == []


def test_the_models_list_names_the_diarize_model(client: TestClient) -> None:
    listed = client.get("/v1/models").json()
    ids = [m["id"] for m in listed["data"]]
    assert ids[-1] == "gpt-4o-transcribe-diarize" and len(ids) == 3
    model = client.get("/v1/models/gpt-4o-transcribe-diarize").json()
    assert model["id"] == "gpt-4o-transcribe-diarize" and model["object"] == "model"
