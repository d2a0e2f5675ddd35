"""Speech events through the HTTP API: real Whisper weights, real speech, real LanceDB."""

from __future__ import annotations

import base64
import uuid
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import srt
import webvtt
from fastapi.testclient import TestClient

from main import create_app
from tests.speech_helpers import jfk_reference, synthesize, tone, wer
from tests.support.client import jfk_base64, wait_terminal
from tests.support.ports import free_port
from tests.support.settings import AUTH, DATA, make_settings


def new_id() -> str:
    return f"speech-{uuid.uuid4().hex[:12]}"


def speech_event(event_id: str, **data: Any) -> dict[str, Any]:
    return {"event_id": event_id, "event_type": "speech", "event_data": data}


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def transcribe_jfk(client: TestClient, **options: Any) -> dict[str, Any]:
    event_id = new_id()
    response = client.post(
        "/events/", json=speech_event(event_id, audio_base64=jfk_base64(), **options)
    )
    assert response.status_code == 202, response.text
    record = wait_terminal(client.get, event_id, timeout_s=300)
    assert record["status"] == "completed", record
    return record


@pytest.fixture(scope="module")
def jfk_record(client: TestClient) -> dict[str, Any]:
    """JFK on the session app (tiny.en, word timestamps, looked up), transcribed once for the
    tests that read one finished speech event."""
    return transcribe_jfk(client, language="en", word_timestamps=True)


def test_jfk_openai_whisper_tiny_en(jfk_record: dict[str, Any]) -> None:
    record = jfk_record
    result = record["result"]
    transcript = result["transcript"]
    assert wer(jfk_reference(), transcript["text"]) <= 0.15, transcript["text"]
    assert transcript["language"] == "en"
    assert 10.5 < transcript["duration_s"] < 11.5
    assert transcript["segments"] and transcript["segments"][0]["words"]
    assert result["model"]["engine"] == "openai-whisper"
    assert result["model"]["name"] == "tiny.en"
    assert len(result["model"]["sha256"]) == 64
    assert set(result["timings"]) >= {"decode_s", "transcribe_s", "lookup_s"}
    assert len(result["matches"]) == 5  # the transcript was looked up


@pytest.fixture(scope="module")
def faster_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path_factory.mktemp("fw"), whisper_engine="faster-whisper", whisper_compute_type="int8"
    )
    with TestClient(create_app(settings), headers=AUTH) as test_client:
        yield test_client


def test_jfk_faster_whisper_tiny_en(faster_client: TestClient) -> None:
    record = transcribe_jfk(faster_client, lookup=False)
    result = record["result"]
    assert wer(jfk_reference(), result["transcript"]["text"]) <= 0.15
    assert result["model"]["engine"] == "faster-whisper"
    assert result["matches"] == []  # lookup=False
    assert result["transcript"]["language"] == "en"


@pytest.mark.slow
def test_jfk_default_base_model(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, whisper_model="base")
    with TestClient(create_app(settings), headers=AUTH) as base_client:
        record = transcribe_jfk(base_client)
    transcript = record["result"]["transcript"]
    assert wer(jfk_reference(), transcript["text"]) <= 0.15, transcript["text"]
    assert transcript["language"] == "en"  # detected by the multilingual model
    assert record["result"]["model"]["name"] == "base"


@pytest.mark.needs("espeak-ng")
def test_spoken_question_finds_the_baggage_entry(client: TestClient, tmp_path: Path) -> None:
    audio = synthesize("How many bags can I check in for free?", tmp_path / "question.wav")
    event_id = new_id()
    body = speech_event(event_id, audio_base64="data:audio/wav;base64," + b64(audio), k=3)
    assert client.post("/events/", json=body).status_code == 202
    record = wait_terminal(client.get, event_id)
    result = record["result"]
    assert "bags" in result["transcript"]["text"].lower(), result["transcript"]
    top3 = [match["id"] for match in result["matches"]]
    assert any(match_id.startswith("baggage-") for match_id in top3), top3
    assert "baggage-checked-allowance#0" in top3


def test_transcript_formats(client: TestClient, jfk_record: dict[str, Any]) -> None:
    record = jfk_record
    url = f"/events/{record['event_id']}/transcript"

    as_json = client.get(url).json()
    assert as_json["text"] == record["result"]["transcript"]["text"]
    txt = client.get(url, params={"format": "txt"})
    assert txt.headers["content-type"].startswith("text/plain")
    assert txt.text.strip() == as_json["text"].strip()

    srt_text = client.get(url, params={"format": "srt"}).text
    cues = list(srt.parse(srt_text, ignore_errors=False))
    assert len(cues) == len(as_json["segments"])
    assert all(c.start < c.end for c in cues) and cues[-1].end.total_seconds() <= 11.5

    vtt = client.get(url, params={"format": "vtt"})
    assert vtt.headers["content-type"].startswith("text/vtt")
    parsed = webvtt.from_string(vtt.text)
    assert len(parsed.captions) == len(cues)
    assert " ".join(c.text for c in parsed.captions).strip() == " ".join(c.content for c in cues)

    assert client.get(url, params={"format": "doc"}).status_code == 422


def test_transcript_of_a_query_event_is_a_409(client: TestClient) -> None:
    event_id = new_id()
    client.post(
        "/events/",
        json={"event_id": event_id, "event_type": "query", "event_data": {"text": "hello"}},
    )
    wait_terminal(client.get, event_id)
    assert client.get(f"/events/{event_id}/transcript").status_code == 409


def test_multipart_upload_has_the_same_contract(client: TestClient) -> None:
    event_id = new_id()
    files = {"file": ("jfk.wav", (DATA / "jfk.wav").read_bytes(), "audio/wav")}
    form = {"event_id": event_id, "language": "en", "lookup": "false"}
    response = client.post("/events/upload", files=files, data=form)
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/events/{event_id}"
    record = wait_terminal(client.get, event_id)
    assert wer(jfk_reference(), record["result"]["transcript"]["text"]) <= 0.15
    # Replaying the same upload is idempotent; another file under the same id conflicts.
    assert client.post("/events/upload", files=files, data=form).status_code == 202
    other = {"file": ("x.wav", (DATA / "jfk.wav").read_bytes()[:-2000], "audio/wav")}
    assert client.post("/events/upload", files=other, data=form).status_code == 409
    bad = client.post("/events/upload", files=files, data={**form, "event_id": "bad id"})
    assert bad.status_code == 422


def intake(client: TestClient, **data: Any) -> Any:
    return client.post("/events/", json=speech_event(new_id(), **data))


def failed_code(client: TestClient, **data: Any) -> str:
    event_id = new_id()
    response = client.post("/events/", json=speech_event(event_id, **data))
    assert response.status_code == 202, response.text
    record = wait_terminal(client.get, event_id)
    assert record["status"] == "failed", record
    return str(record["error"]["code"])


def test_bad_audio_gets_clear_errors_and_the_next_event_still_completes(
    client: TestClient, tmp_path: Path
) -> None:
    # Known at intake: 422 with the stable code as the error type, or 413.
    response = intake(client, audio_base64="not base64!!")
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "invalid_base64"
    response = intake(client)
    assert response.status_code == 422 and "exactly one" in response.text
    response = intake(client, audio_base64=jfk_base64(), audio_url="http://127.0.0.1/a.wav")
    assert response.status_code == 422
    big = base64.b64encode(b"\0" * (1024 * 1024 + 10)).decode()
    assert intake(client, audio_base64=big).status_code == 413
    response = intake(client, audio_url="https://example.com/a.wav")
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "url_not_allowed"
    response = intake(client, audio_url="ftp://127.0.0.1/a.wav")
    assert response.json()["detail"][0]["type"] == "url_not_allowed"

    # Known only when decoding: the event fails with a stable code.
    assert failed_code(client, audio_base64=base64.b64encode(b"this is text").decode()) == (
        "unsupported_audio"
    )
    empty = tmp_path / "empty.wav"
    with wave.open(str(empty), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
    assert failed_code(client, audio_base64=b64(empty)) == "empty_audio"
    long_audio = tone(tmp_path / "long.ogg", 75, ("-c:a", "libopus", "-b:a", "8k"))
    assert failed_code(client, audio_base64=b64(long_audio)) == "audio_too_long"
    closed_port = free_port()
    assert failed_code(client, audio_url=f"http://127.0.0.1:{closed_port}/a.wav") == (
        "url_fetch_failed"
    )

    record = transcribe_jfk(client, lookup=False)
    assert record["status"] == "completed"


def test_language_must_be_one_whisper_knows(client: TestClient) -> None:
    import whisper.tokenizer

    from skyhigh.domain.payloads import WHISPER_LANGUAGES

    assert set(whisper.tokenizer.LANGUAGES) == WHISPER_LANGUAGES
    response = intake(client, audio_base64=jfk_base64(), language="xx")
    assert response.status_code == 422
    assert "unknown language 'xx'" in response.json()["detail"][0]["msg"]
