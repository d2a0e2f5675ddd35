"""Diarization through a real server: the official `openai` SDK (`gpt-4o-transcribe-diarize`,
`diarized_json`, known speakers, segment streaming, OpenAI's 400s), live `speakers` messages,
and the worker's diarization path without torch."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conversations import conversations, utterances
from tests.support.client import wait_terminal
from tests.support.diarized import encoded
from tests.support.server import ServerProcess
from tests.support.settings import AUTH, TOKENS
from tests.support.streams import ws_messages
from tests.support.torch_free import torch_free_diarization
from tests.test_diarization_events import MAX_DER, MAX_SEGMENT_DER, segment_der

DIARIZE = "gpt-4o-transcribe-diarize"
# The conversation diarized without known speakers or hints: `diarized_json` streamed from
# DIARIZE and `verbose_json` from whisper-1 with `diarize` are the same request (the model
# name and the format only pick the rendering), so with one Idempotency-Key the second test
# answers from the first one's event instead of transcribing and diarizing 30 s again.
PLAIN_DIARIZE_KEY = f"oai-diarize-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def sdk(live_server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{live_server.url}/v1", api_key=TOKENS[0], max_retries=0, timeout=300
    ) as client:
        yield client


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("clips")
    conversation = (tmp / "conversation.ogg", conversations()[0].audio)
    reference = (tmp / "reader.ogg", utterances("sonnet")[-1].audio)
    for path, audio in (conversation, reference):
        path.write_bytes(encoded(audio, tmp, path.stem))
    return {"conversation": conversation[0], "reader": reference[0]}


def data_url(path: Path) -> str:
    return "data:audio/ogg;base64," + base64.b64encode(path.read_bytes()).decode()


def test_the_sdk_gets_diarized_json_with_a_known_speaker(
    sdk: openai.OpenAI, clips: dict[str, Path]
) -> None:
    key = f"oai-diarize-{uuid.uuid4().hex[:8]}"
    with clips["conversation"].open("rb") as audio:
        result = sdk.audio.transcriptions.create(
            file=audio,
            model=DIARIZE,
            response_format="diarized_json",
            chunking_strategy="auto",
            extra_body={
                "known_speaker_names": ["Reader"],
                "known_speaker_references": [data_url(clips["reader"])],
            },
            extra_headers={"Idempotency-Key": key},
        )
    assert type(result).__name__ == "TranscriptionDiarized"
    assert result.task == "transcribe" and result.duration == pytest.approx(29.7, abs=0.2)
    assert {s.type for s in result.segments} == {"transcript.text.segment"}
    assert {s.speaker for s in result.segments} == {"Reader", "A"}  # the other: OpenAI's letter
    assert [s.id for s in result.segments] == [f"seg_{i:03d}" for i in range(len(result.segments))]
    segments = [
        {"start": s.start, "end": s.end, "speaker": s.speaker, "text": s.text}
        for s in result.segments
    ]
    names = {"sonnet": "Reader", "jfk": "A"}
    assert segment_der(conversations()[0], segments, names) <= MAX_SEGMENT_DER
    assert segment_der(conversations()[0], segments, names, within_speech=True) <= MAX_DER
    assert "fairest creatures" in result.text.lower()


def test_the_sdk_streams_diarized_segments_then_the_text(
    sdk: openai.OpenAI, clips: dict[str, Path]
) -> None:
    with clips["conversation"].open("rb") as audio:
        events = list(
            sdk.audio.transcriptions.create(
                file=audio,
                model=DIARIZE,
                response_format="diarized_json",
                stream=True,
                extra_headers={"Idempotency-Key": PLAIN_DIARIZE_KEY},
            )
        )
    *segments, done = events
    assert segments and {e.type for e in segments} == {"transcript.text.segment"}
    assert {e.speaker for e in segments} == {"A", "B"}
    assert done.type == "transcript.text.done" and "fairest creatures" in done.text.lower()


def test_diarize_with_any_model_and_speakers_in_verbose_json(
    sdk: openai.OpenAI, clips: dict[str, Path]
) -> None:
    with clips["conversation"].open("rb") as audio:
        result = sdk.audio.transcriptions.create(
            file=audio,
            model="whisper-1",
            response_format="verbose_json",
            extra_body={"diarize": True},
            extra_headers={"Idempotency-Key": PLAIN_DIARIZE_KEY},
        )
    speakers = [segment.model_extra["speaker"] for segment in result.segments or ()]
    assert set(speakers) == {"SPEAKER_00", "SPEAKER_01"}


@pytest.mark.parametrize(
    ("options", "param", "message"),
    [
        ({"model": "whisper-1", "response_format": "diarized_json"}, "response_format", DIARIZE),
        ({"model": DIARIZE, "prompt": "Shakespeare"}, "prompt", "Prompt is not supported"),
        (
            {"model": DIARIZE, "response_format": "verbose_json"},
            "response_format",
            "not compatible",
        ),
        (
            {"model": DIARIZE, "timestamp_granularities": ["word"]},
            "timestamp_granularities[]",
            "not supported",
        ),
        (
            {
                "model": "whisper-1",
                "extra_body": {
                    "known_speaker_names": ["A"],
                    "known_speaker_references": ["data:audio/wav;base64,AAAA"],
                },
            },
            "known_speaker_names[]",
            DIARIZE,
        ),
        (
            {
                "model": DIARIZE,
                "extra_body": {
                    "known_speaker_names": ["A", "B"],
                    "known_speaker_references": ["data:audio/wav;base64,AAAA"],
                },
            },
            "known_speaker_references[]",
            "one reference per name",
        ),
        (
            {
                "model": DIARIZE,
                "extra_body": {
                    "known_speaker_names": ["A"],
                    "known_speaker_references": ["https://example.com/a.wav"],
                },
            },
            "known_speaker_references[]",
            "data URL",
        ),
        (
            {"model": DIARIZE, "chunking_strategy": {"type": "client_vad"}},
            "chunking_strategy",
            "server_vad",
        ),
    ],
)
def test_unsupported_combinations_are_openai_400s(
    sdk: openai.OpenAI, clips: dict[str, Path], options: dict[str, Any], param: str, message: str
) -> None:
    with clips["reader"].open("rb") as audio, pytest.raises(openai.BadRequestError) as caught:
        sdk.audio.transcriptions.create(file=audio, **options)
    assert caught.value.param == param
    assert message in caught.value.message


def test_a_server_vad_chunking_strategy_object_is_accepted(
    sdk: openai.OpenAI, clips: dict[str, Path]
) -> None:
    strategy = {"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 300}
    with clips["reader"].open("rb") as audio:
        result = sdk.audio.transcriptions.create(
            file=audio,
            model=DIARIZE,
            response_format="json",
            chunking_strategy=strategy,  # type: ignore[arg-type]
        )
    assert result.text.strip()


def test_live_subscribers_get_a_speakers_message_relabelling_the_segments(
    live_server: ServerProcess, clips: dict[str, Path]
) -> None:
    event_id = f"live-diarize-{uuid.uuid4().hex[:8]}"
    body = {
        "event_id": event_id,
        "event_type": "speech",
        "event_data": {
            "audio_base64": base64.b64encode(clips["conversation"].read_bytes()).decode(),
            "lookup": False,
            "diarize": True,
            "num_speakers": 2,
        },
    }
    response = httpx.post(f"{live_server.url}/events/", json=body, headers=AUTH, timeout=60)
    assert response.status_code == 202, response.text
    messages, code = ws_messages(live_server.url, event_id, token=TOKENS[0], timeout_s=300)
    assert code == 1000
    kinds = [m["type"] for m in messages]
    assert kinds.index("segment") < kinds.index("speakers") < kinds.index("transcript")
    relabel = messages[kinds.index("speakers")]
    with httpx.Client(base_url=live_server.url, headers=AUTH, timeout=60) as http:
        record = wait_terminal(http.get, event_id, timeout_s=300)
    transcript = record["result"]["transcript"]
    assert relabel["segments"] == transcript["segments"]
    assert relabel["speakers"] == transcript["speakers"]
    assert {s["speaker"] for s in transcript["segments"]} == {"SPEAKER_00", "SPEAKER_01"}


def test_the_workers_diarization_path_runs_without_torch() -> None:
    # The worker's diarization step in a fresh interpreter, on the ONNX export alone (shared
    # with the encoder's check in tests/test_diarization.py: tests/support/torch_free.py).
    outcome = torch_free_diarization()["worker"]
    assert outcome["loaded"] == []
    assert outcome["speakers"] == ["SPEAKER_00", "SPEAKER_01"]
    assert outcome["der"] <= MAX_DER
