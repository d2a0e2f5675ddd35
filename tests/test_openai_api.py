"""The OpenAI-compatible audio API, driven by the official `openai` SDK against a real server.

Real Whisper weights on real speech (tiny.en on tests/data/jfk.wav; the default `base` model on
German speech for translation), every answer also checked as the durable event it became.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import srt
import webvtt
from fastapi import FastAPI
from fastapi.testclient import TestClient
from whisper.tokenizer import LANGUAGES

from skyhigh.api.errors import install_error_handlers
from skyhigh.api.openai_compat.formats import LANGUAGE_NAMES, compression_ratio, verbose_segment
from skyhigh.domain.errors import QueueFull
from skyhigh.domain.events import Segment
from tests.speech_helpers import ffmpeg, jfk_reference, wer
from tests.support.client import wait_terminal
from tests.support.server import ServerProcess
from tests.support.settings import AUTH, DATA, METRICS_TOKEN, TOKENS, server_env

JFK = DATA / "jfk.wav"


@pytest.fixture(scope="module")
def sdk(live_server: ServerProcess) -> Iterator[openai.OpenAI]:
    # No SDK retries: a test must see each answer the server gives.
    with openai.OpenAI(
        base_url=f"{live_server.url}/v1", api_key=TOKENS[0], max_retries=0
    ) as client:
        yield client


@pytest.fixture(scope="module")
def http(live_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, headers=AUTH, timeout=120) as client:
        yield client


def new_key() -> str:
    return f"oai-test-{uuid.uuid4().hex[:12]}"


# One plain JFK transcription (whisper-1, no options) for the tests about how an answer is
# rendered or replayed: its key makes every later call with the same file and options an
# answer from the same event, not another decode. Tests that need a decode of their own
# (streaming while it runs, counting transcriptions, a client that leaves) use new keys.
JFK_KEY = new_key()


def transcribe(sdk: openai.OpenAI, **options: Any) -> Any:
    with JFK.open("rb") as audio:
        return sdk.audio.transcriptions.create(file=audio, model="whisper-1", **options)


def metric(http: httpx.Client, name: str, **labels: str) -> float:
    text = http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    selector = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(selector)}\}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def vtt_time(offset: timedelta) -> str:
    return srt.timedelta_to_srt_timestamp(offset).replace(",", ".")


def status_of(http: httpx.Client, event_id: str) -> str | None:
    response = http.get(f"/events/{event_id}")
    return str(response.json()["status"]) if response.status_code == 200 else None


def transcriptions_run(http: httpx.Client) -> float:
    return metric(
        http, "skyhigh_step_duration_seconds_count", event_type="speech", step="transcribe"
    )


# --------------------------------------------------------------------------- response formats


def test_every_response_format(sdk: openai.OpenAI) -> None:
    # One transcription, five answers: each format renders the same event.
    key = {"extra_headers": {"Idempotency-Key": JFK_KEY}}
    as_json = transcribe(sdk, **key)
    assert isinstance(as_json, openai.types.audio.Transcription)
    assert wer(jfk_reference(), as_json.text) <= 0.15

    text = transcribe(sdk, response_format="text", **key)
    assert isinstance(text, str) and text == as_json.text + "\n"

    verbose = transcribe(sdk, response_format="verbose_json", **key)
    assert verbose.text == as_json.text and verbose.words is None  # words only when asked

    cues = list(srt.parse(transcribe(sdk, response_format="srt", **key), ignore_errors=False))
    assert [cue.content for cue in cues] == [s.text.strip() for s in verbose.segments]
    assert all(cue.start < cue.end for cue in cues)

    captions = webvtt.from_string(transcribe(sdk, response_format="vtt", **key)).captions
    assert [caption.text for caption in captions] == [cue.content for cue in cues]
    assert [(caption.start, caption.end) for caption in captions] == [
        (vtt_time(cue.start), vtt_time(cue.end)) for cue in cues
    ]


def test_media_types_follow_openai(http: httpx.Client) -> None:
    key = JFK_KEY
    media_types = {}
    for response_format in ("json", "text", "srt", "vtt", "verbose_json"):
        response = http.post(
            "/v1/audio/transcriptions",
            files={"file": ("jfk.wav", JFK.read_bytes(), "audio/wav")},
            data={"model": "whisper-1", "response_format": response_format},
            headers={"Idempotency-Key": key},  # one transcription, five answers
        )
        assert response.status_code == 200, response.text
        media_types[response_format] = response.headers["content-type"].split(";")[0]
    assert media_types == {
        "json": "application/json",
        "text": "text/plain",
        "srt": "text/plain",
        "vtt": "text/vtt",
        "verbose_json": "application/json",
    }


def test_verbose_json_with_word_and_segment_timestamps(
    sdk: openai.OpenAI, http: httpx.Client
) -> None:
    key = new_key()
    verbose = transcribe(
        sdk,
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
        extra_headers={"Idempotency-Key": key},
    )
    assert verbose.language == "english" and verbose.task == "transcribe"
    assert verbose.duration == pytest.approx(11.0, abs=0.1)
    assert wer(jfk_reference(), verbose.text) <= 0.15

    words = verbose.words or []
    assert wer(jfk_reference(), " ".join(w.word for w in words)) <= 0.15
    assert all(0 <= w.start <= w.end <= verbose.duration for w in words)
    assert all(a.start <= b.start for a, b in zip(words, words[1:], strict=False))

    segments = verbose.segments or []
    assert len(segments) >= 2  # JFK's two sentences
    assert [s.id for s in segments] == list(range(len(segments)))
    for segment in segments:
        assert segment.start < segment.end <= verbose.duration + 0.5
        assert -1.0 < segment.avg_logprob <= 0 and 0 <= segment.no_speech_prob < 0.6
        assert 0 <= segment.temperature <= 1 and segment.compression_ratio > 0

    # The same transcript as the durable event it became; what the engine did not record
    # is derived (seek from the start, compression ratio from the text as whisper does).
    record = http.get(f"/events/{key}").json()
    stored = record["result"]["transcript"]
    assert record["event_type"] == "speech" and stored["text"] == verbose.text
    assert len(stored["segments"]) == len(segments)
    for segment, kept in zip(segments, stored["segments"], strict=True):
        assert (segment.start, segment.end, segment.text) == (
            kept["start"],
            kept["end"],
            kept["text"],
        )
        assert segment.seek == kept.get("seek", int(kept["start"] * 100))
        assert segment.tokens == kept.get("tokens", [])
        assert segment.temperature == kept.get("temperature", 0.0)
        assert segment.compression_ratio == pytest.approx(
            kept.get("compression_ratio", compression_ratio(kept["text"]))
        )
    assert record["result"]["matches"] == []  # an OpenAI call asks for no knowledge lookup


def test_timestamp_granularities_need_verbose_json(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        transcribe(sdk, response_format="json", timestamp_granularities=["word"])
    assert caught.value.body == {
        "message": "timestamp_granularities[] needs response_format=verbose_json",
        "type": "invalid_request_error",
        "param": "timestamp_granularities[]",
        "code": "invalid_value",
    }


# --------------------------------------------------------------------------- translation


@pytest.mark.needs("espeak-ng")
@pytest.mark.slow
def test_translation_into_english_with_the_default_model(tmp_path: Path) -> None:
    """German speech, the default multilingual `base` model behind `whisper-1`."""
    raw = tmp_path / "german.raw.wav"
    text = "Guten Morgen. Ich möchte ein Ticket nach Berlin kaufen."
    subprocess.run(["espeak-ng", "-v", "de", "-s", "130", "-w", str(raw), text], check=True)
    german = tmp_path / "german.wav"
    ffmpeg("-i", str(raw), "-ar", "16000", "-ac", "1", str(german))
    # faster-whisper: the second engine behind the same face, and the faster one on CPU.
    # Without diarization, the diarize model is not offered.
    env = server_env(
        tmp_path, WHISPER_MODEL="base", WHISPER_ENGINE="faster-whisper", DIARIZATION="false"
    )
    server = ServerProcess(env, tmp_path / "server.log")
    server.start()
    try:
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key=TOKENS[0]) as sdk:
            key = new_key()
            with german.open("rb") as audio, pytest.warns(DeprecationWarning):
                # The SDK marks translations deprecated (OpenAI retires whisper-1); served here.
                translated = sdk.audio.translations.create(
                    file=audio,
                    model="whisper-1",
                    response_format="verbose_json",
                    extra_headers={"Idempotency-Key": key},
                )
            assert [m.id for m in sdk.models.list()] == ["whisper-1", "base"]
        record = httpx.get(f"{server.url}/events/{key}", headers=AUTH).json()
    finally:
        server.stop()
    words = set(re.findall(r"[a-zäöüß]+", translated.text.lower()))
    assert {"morning", "ticket", "berlin"} <= words, translated.text
    assert not words & {"guten", "möchte", "kaufen"}, translated.text
    assert translated.language == "english"  # a translation's text is English (OpenAI's shape)
    assert record["result"]["transcript"]["language"] == "de"  # what was spoken
    assert record["result"]["model"]["name"] == "base"  # whisper-1 is the configured model


# --------------------------------------------------------------------------- streaming


def test_stream_sends_a_delta_per_segment_then_the_text(
    sdk: openai.OpenAI, http: httpx.Client
) -> None:
    key = new_key()
    with JFK.open("rb") as audio:
        events = sdk.audio.transcriptions.create(
            file=audio,
            model="whisper-1",
            stream=True,
            extra_headers={"Idempotency-Key": key},
        )
        # The SDK returns once the response has started: the stream is open while the event
        # still runs (deltas follow the engine: a segment as soon as its window or batch is done).
        status_at_open = status_of(http, key)
        received = list(events)
    assert status_at_open in ("queued", "processing")
    *deltas, done = received
    assert [e.type for e in deltas] == ["transcript.text.delta"] * len(deltas)
    assert done.type == "transcript.text.done"
    stored = http.get(f"/events/{key}").json()["result"]["transcript"]
    assert len(deltas) == len(stored["segments"]) >= 2  # one per segment, JFK's two sentences
    assert [d.delta.strip() for d in deltas] == [s["text"].strip() for s in stored["segments"]]
    assert "".join(d.delta for d in deltas) == done.text == stored["text"]
    assert wer(jfk_reference(), done.text) <= 0.15


def test_a_stream_of_a_finished_event_replays_it(sdk: openai.OpenAI) -> None:
    key = JFK_KEY  # finished by the tests above (or transcribed here when run alone)
    finished = transcribe(sdk, extra_headers={"Idempotency-Key": key})
    with JFK.open("rb") as audio:
        events = list(
            sdk.audio.transcriptions.create(
                file=audio, model="whisper-1", stream=True, extra_headers={"Idempotency-Key": key}
            )
        )
    assert events[-1].type == "transcript.text.done" and events[-1].text == finished.text
    assert "".join(e.delta for e in events[:-1]) == finished.text


def test_stream_needs_json_or_text(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        transcribe(sdk, response_format="srt", stream=True)
    assert caught.value.param == "stream"


# --------------------------------------------------------------------------- models


def test_models_list_and_retrieve(sdk: openai.OpenAI) -> None:
    models = list(sdk.models.list())
    assert [m.id for m in models] == ["whisper-1", "tiny.en", "gpt-4o-transcribe-diarize"]
    assert all(m.object == "model" and m.owned_by == "skyhigh" for m in models)
    assert sdk.models.retrieve("tiny.en").id == "tiny.en"
    assert sdk.models.retrieve("gpt-4o-transcribe-diarize").id == "gpt-4o-transcribe-diarize"
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.models.retrieve("large-v3")
    assert caught.value.code == "model_not_found"


def test_other_models_are_refused_with_the_accepted_names(sdk: openai.OpenAI) -> None:
    with JFK.open("rb") as audio, pytest.raises(openai.BadRequestError) as caught:
        sdk.audio.transcriptions.create(file=audio, model="gpt-4o-transcribe")
    assert caught.value.param == "model" and caught.value.code == "model_not_found"
    assert "whisper-1, tiny.en" in caught.value.message
    with JFK.open("rb") as audio:  # a bundled name works when it is the loaded model
        by_name = sdk.audio.transcriptions.create(
            file=audio, model="tiny.en", extra_headers={"Idempotency-Key": JFK_KEY}
        )  # the same request as whisper-1's: answered from the shared event
        assert by_name.text


# --------------------------------------------------------------------------- errors


def test_a_wrong_token_is_an_authentication_error(
    live_server: ServerProcess, http: httpx.Client
) -> None:
    with openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="not-a-token") as wrong:
        with pytest.raises(openai.AuthenticationError) as caught:
            wrong.models.list()
        with JFK.open("rb") as audio, pytest.raises(openai.AuthenticationError):
            wrong.audio.transcriptions.create(file=audio, model="whisper-1")
    assert caught.value.body == {
        "message": "the bearer token is not valid",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
    # The /events API keeps its own error shape.
    events = httpx.get(f"{live_server.url}/events/", headers={"Authorization": "Bearer nope"})
    assert events.status_code == 401 and events.json() == {
        "detail": "the bearer token is not valid"
    }


def test_a_file_that_is_not_audio_is_a_bad_request(sdk: openai.OpenAI, http: httpx.Client) -> None:
    key = new_key()
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.audio.transcriptions.create(
            file=("notes.wav", b"these are not the sounds you are looking for"),
            model="whisper-1",
            extra_headers={"Idempotency-Key": key},
        )
    body = caught.value.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
    assert body["type"] == "invalid_request_error" and body["param"] == "file"
    assert body["code"] == "unsupported_audio" and "could not decode" in body["message"]
    # Stored and visible like every event, with the same error.
    assert caught.value.response.headers["x-event-id"] == key
    record = http.get(f"/events/{key}").json()
    assert record["status"] == "failed" and record["error"]["code"] == "unsupported_audio"

    with pytest.raises(openai.BadRequestError) as caught:
        sdk.audio.transcriptions.create(file=("empty.wav", b""), model="whisper-1")
    assert caught.value.code == "empty_audio"


def test_audio_over_the_limit_is_a_413(sdk: openai.OpenAI) -> None:
    too_big = b"\0" * (25 * 1024 * 1024 + 1)  # MAX_AUDIO_BYTES (25 MiB) + 1, under MAX_BODY_BYTES
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.audio.transcriptions.create(file=("big.wav", too_big), model="whisper-1")
    assert caught.value.status_code == 413
    assert caught.value.code == "audio_too_large" and caught.value.param == "file"


def test_bad_fields_are_400s_naming_the_field(sdk: openai.OpenAI) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"language": "xx"}, "language"),
        ({"temperature": 1.5}, "temperature"),
        ({"temperature": 0.4}, "temperature"),  # refused, not silently decoded at 0
        ({"response_format": "diarized_json"}, "response_format"),
        ({"extra_headers": {"Idempotency-Key": "no spaces allowed"}}, "Idempotency-Key"),
    ]
    for options, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            transcribe(sdk, **options)
        assert caught.value.param == param, caught.value.body


def test_queue_full_is_a_503_with_retry_after_in_openai_shape() -> None:
    """The mapping alone (a real full queue is exercised on /events by the intake tests)."""
    app = FastAPI()

    @app.post("/v1/audio/transcriptions")
    @app.post("/events/")
    async def full() -> None:
        raise QueueFull(max_pending=3, retry_after_s=7)

    install_error_handlers(app, event_types=["speech"])
    with TestClient(app) as client:
        openai_face = client.post("/v1/audio/transcriptions")
        events_face = client.post("/events/")
    assert openai_face.status_code == events_face.status_code == 503
    assert openai_face.headers["retry-after"] == events_face.headers["retry-after"] == "7"
    assert openai_face.json()["error"]["code"] == "queue_full"
    assert events_face.json() == {
        "detail": "too many pending events (MAX_PENDING_EVENTS=3); retry later"
    }


# --------------------------------------------------------------------------- durability


def test_an_idempotency_key_retry_does_not_transcribe_twice(
    sdk: openai.OpenAI, http: httpx.Client
) -> None:
    key = new_key()
    before = transcriptions_run(http)
    first = sdk.audio.transcriptions.with_raw_response.create(
        file=JFK.open("rb"), model="whisper-1", extra_headers={"Idempotency-Key": key}
    )
    retry = sdk.audio.transcriptions.with_raw_response.create(
        file=JFK.open("rb"), model="whisper-1", extra_headers={"Idempotency-Key": key}
    )
    assert first.headers["x-event-id"] == retry.headers["x-event-id"] == key
    assert first.parse().text == retry.parse().text
    assert transcriptions_run(http) == before + 1
    assert http.get(f"/events/{key}").json()["attempts"] == 1

    # The same key for another file is refused, not answered with the first file's text.
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        sdk.audio.transcriptions.create(
            file=("other.wav", JFK.read_bytes()[:-4000]),
            model="whisper-1",
            extra_headers={"Idempotency-Key": key},
        )
    assert caught.value.code == "idempotency_key_reused"


def test_every_call_is_an_event(sdk: openai.OpenAI, http: httpx.Client) -> None:
    response = sdk.audio.transcriptions.with_raw_response.create(
        file=JFK.open("rb"), model="whisper-1"
    )
    event_id = response.headers["x-event-id"]
    listed = http.get("/events/", params={"event_type": "speech", "limit": 200}).json()
    assert event_id in [item["event_id"] for item in listed["items"]]
    assert http.get(f"/events/{event_id}/transcript", params={"format": "txt"}).text == (
        response.parse().text + "\n"
    )


def test_a_client_that_leaves_leaves_the_event_to_finish(
    sdk: openai.OpenAI, live_server: ServerProcess, http: httpx.Client
) -> None:
    key = new_key()
    before = transcriptions_run(http)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{live_server.url}/v1/audio/transcriptions",
            headers={**AUTH, "Idempotency-Key": key},
            files={"file": ("jfk.wav", JFK.read_bytes(), "audio/wav")},
            data={"model": "whisper-1"},
            timeout=httpx.Timeout(30, read=0.2),  # gone before the transcript is ready
        )
    left_while = status_of(http, key)
    # The client's retry (same key) waits for the same event and gets its transcript.
    retried = transcribe(sdk, extra_headers={"Idempotency-Key": key})
    record = wait_terminal(http.get, key)
    assert left_while in ("queued", "processing")
    assert record["status"] == "completed" and record["attempts"] == 1
    assert retried.text == record["result"]["transcript"]["text"]
    assert wer(jfk_reference(), retried.text) <= 0.15
    assert transcriptions_run(http) == before + 1


def test_health_answers_while_four_sdk_requests_transcribe(
    sdk: openai.OpenAI, live_server: ServerProcess, http: httpx.Client
) -> None:
    keys = [new_key() for _ in range(4)]
    probes: list[int] = []
    with ThreadPoolExecutor(4) as pool:
        futures = [
            pool.submit(transcribe, sdk, extra_headers={"Idempotency-Key": key}) for key in keys
        ]
        while "processing" not in [status_of(http, key) for key in keys]:
            time.sleep(0.02)
        for _ in range(10):
            probes.append(httpx.get(f"{live_server.url}/health", timeout=10).status_code)
        unfinished = sum(not future.done() for future in futures)
        results = [future.result() for future in futures]
    assert probes == [200] * 10
    assert unfinished >= 1  # the probes really overlapped the SDK requests
    assert all(wer(jfk_reference(), result.text) <= 0.15 for result in results)
    assert [status_of(http, key) for key in keys] == ["completed"] * 4


# --------------------------------------------------------------------------- units


def test_language_names_match_whisper() -> None:
    assert LANGUAGE_NAMES == LANGUAGES


def test_engine_reported_segment_details_win_over_derived_ones() -> None:
    base = {"id": 0, "start": 1.5, "end": 2.0, "text": " hi", "avg_logprob": -0.2}
    plain = Segment(**base, no_speech_prob=0.01)
    # Unset details stay out of stored results and /events answers.
    assert set(plain.model_dump()) == {*base, "no_speech_prob", "words"}
    derived = verbose_segment(plain)
    assert derived["seek"] == 150 and derived["tokens"] == [] and derived["temperature"] == 0.0
    reported = Segment(
        **base,
        no_speech_prob=0.01,
        seek=0,
        tokens=[50363, 23105],
        temperature=0.4,
        compression_ratio=1.7,
    )
    assert {k: verbose_segment(reported)[k] for k in ("seek", "tokens", "temperature")} == {
        "seek": 0,
        "tokens": [50363, 23105],
        "temperature": 0.4,
    }
    assert verbose_segment(reported)["compression_ratio"] == 1.7
