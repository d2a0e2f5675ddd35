"""Diarization in the product: speech events with `diarize`, the transcript formats, validation.

A real two-speaker conversation (tests/conversations.py: real recordings of two people joined in
turns with known times) goes through the in-process app with real tiny.en weights and the real
speaker model; DER (defined in tests/conversations.py) is computed from the result's segments.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import webvtt
from fastapi.testclient import TestClient

from skyhigh.domain.events import Segment, SpeakerTalk, Transcript, Word
from skyhigh.speech.diarization import Turn
from skyhigh.speech.diarization.service import label_transcript
from skyhigh.speech.subtitles import to_srt, to_text, to_vtt
from tests.conversations import Conversation, der, utterances
from tests.support.client import wait_terminal
from tests.support.diarized import DIARIZED_EVENT_ID, b64, encoded, two_speakers

# DER of the result's segments (Whisper's segment times, not the speaker turns): a segment spans
# the short pauses inside it, which DER counts as false-alarm speech (measured 0.26 on the
# two-speaker conversation with tiny.en), so the full figure gets a looser bound; within the
# reference speech (miss + confusion only) the turn-level bound of tests/test_diarization.py
# holds. A one-speaker answer would score ~0.5 on either.
MAX_SEGMENT_DER = 0.35
MAX_DER = 0.15


def segment_der(
    conversation: Conversation,
    segments: list[dict[str, Any]],
    names: dict[str, str],
    *,
    within_speech: bool = False,
) -> float:
    """DER of segments against the reference turns (speakers renamed by `names`); with
    `within_speech`, the segments are first cut to the reference speech (no false alarm)."""
    reference = [(s, e, names.get(who, who)) for s, e, who in conversation.turns]
    hypothesis = [(s["start"], s["end"], s["speaker"]) for s in segments if s["text"].strip()]
    if within_speech:
        hypothesis = [
            (max(start, ref_start), min(end, ref_end), speaker)
            for start, end, speaker in hypothesis
            for ref_start, ref_end, _ in reference
            if min(end, ref_end) > max(start, ref_start)
        ]
    return der(reference, hypothesis)


def test_a_diarized_event_names_its_speakers_within_the_der_bound(diarized: dict[str, Any]) -> None:
    transcript = diarized["result"]["transcript"]
    speakers = transcript["speakers"]
    assert [s["speaker"] for s in speakers if s["known"]] == ["Reader"]
    assert len(speakers) == 2  # JFK keeps a generic label
    other = next(s["speaker"] for s in speakers if not s["known"])
    assert other.startswith("SPEAKER_")
    assert all(s["talk_time_s"] > 5 for s in speakers)
    segments = transcript["segments"]
    assert all(s["speaker"] in ("Reader", other) for s in segments)
    assert [s["id"] for s in segments] == list(range(len(segments)))
    words = [w for s in segments for w in s["words"]]
    assert words and all(w["speaker"] == s["speaker"] for s in segments for w in s["words"])
    # Named by similarity to the reference clip, taken literally (no best mapping for "Reader").
    names = {"sonnet": "Reader", "jfk": other}
    assert segment_der(two_speakers(), segments, names) <= MAX_SEGMENT_DER
    assert segment_der(two_speakers(), segments, names, within_speech=True) <= MAX_DER
    assert "diarize_s" in diarized["result"]["timings"]


def test_the_transcript_formats_carry_the_speakers(
    client: TestClient, diarized: dict[str, Any]
) -> None:
    url = f"/events/{DIARIZED_EVENT_ID}/transcript"
    segments = diarized["result"]["transcript"]["segments"]
    as_json = client.get(url, params={"format": "json"}).json()
    assert [s["speaker"] for s in as_json["segments"]] == [s["speaker"] for s in segments]

    lines = client.get(url, params={"format": "txt"}).text.splitlines()
    speakers = [line.split(": ", 1)[0] for line in lines]
    assert set(speakers) == {s["speaker"] for s in segments} and len(lines) >= 4
    assert all(a != b for a, b in zip(speakers, speakers[1:], strict=False))  # one line per turn

    srt = client.get(url, params={"format": "srt"}).text
    cue_texts = [block.splitlines()[2] for block in srt.strip().split("\n\n")]
    assert [text.split("] ", 1)[0] for text in cue_texts] == [
        f"[{s['speaker']}" for s in segments if s["text"].strip()
    ]

    vtt = client.get(url, params={"format": "vtt"})
    assert vtt.headers["content-type"].startswith("text/vtt")
    captions = webvtt.from_string(vtt.text)
    assert [c.voice for c in captions] == [s["speaker"] for s in segments if s["text"].strip()]
    assert "<v Reader>" in vtt.text


def test_diarization_fields_are_validated(client: TestClient) -> None:
    jfk = base64.b64encode((Path(__file__).parent / "data" / "jfk.wav").read_bytes()).decode()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"num_speakers": 2}, "need diarize: true"),
        ({"diarize": True, "min_speakers": 3, "max_speakers": 2}, "above max_speakers"),
        ({"diarize": True, "num_speakers": 2, "max_speakers": 3}, "not both"),
        ({"diarize": True, "num_speakers": 0}, "greater than or equal to 1"),
        (
            {"diarize": True, "known_speakers": [{"name": "A"}]},
            "exactly one of audio_base64 or audio_url",
        ),
        (
            {"diarize": True, "known_speakers": [{"name": "A", "audio_base64": "no*base64"}]},
            "not valid base64",
        ),
        (
            {"diarize": True, "known_speakers": [{"name": "<b>", "audio_base64": jfk}]},
            "should match pattern",
        ),
        (
            {
                "diarize": True,
                "known_speakers": [{"name": "A", "audio_base64": jfk}] * 2,
            },
            "names must differ",
        ),
        (
            {
                "diarize": True,
                "known_speakers": [{"name": f"S{i}", "audio_base64": "AAAA"} for i in range(9)],
            },
            "at most 8",
        ),
        (
            {
                "diarize": True,
                "known_speakers": [{"name": "A", "audio_url": "http://example.com/a.wav"}],
            },
            "not in AUDIO_URL_ALLOWED_HOSTS",
        ),
    ]
    for fields, message in cases:
        body = {
            "event_id": "diarize-invalid",
            "event_type": "speech",
            "event_data": {"audio_base64": jfk, **fields},
        }
        response = client.post("/events/", json=body)
        assert response.status_code == 422, (fields, response.text)
        assert message in response.text, (message, response.text)


def test_a_too_long_reference_clip_fails_the_event_naming_the_speaker(
    client: TestClient, tmp_path: Path
) -> None:
    jfk = (Path(__file__).parent / "data" / "jfk.wav").read_bytes()
    long_ref = b64(encoded(np.tile(utterances("sonnet")[0].audio, 20), tmp_path, "long"))
    body = {
        "event_id": "diarize-long-reference",
        "event_type": "speech",
        "event_data": {
            "audio_base64": b64(jfk),
            "lookup": False,
            "diarize": True,
            "known_speakers": [{"name": "Reader", "audio_base64": long_ref}],
        },
    }
    assert client.post("/events/", json=body).status_code == 202
    record = wait_terminal(client.get, "diarize-long-reference", timeout_s=300)
    assert record["status"] == "failed"
    assert record["error"]["code"] == "audio_too_long"
    assert "known speaker 'Reader'" in record["error"]["message"]


def test_the_upload_form_takes_diarization_fields(client: TestClient, tmp_path: Path) -> None:
    jfk = Path(__file__).parent / "data" / "jfk.wav"
    known = f'{{"name": "President", "audio_base64": "{b64(jfk.read_bytes())}"}}'
    with jfk.open("rb") as audio:
        response = client.post(
            "/events/upload",
            files={"file": ("jfk.wav", audio, "audio/wav")},
            data={
                "event_id": "diarize-upload",
                "lookup": "false",
                "diarize": "true",
                "known_speakers": known,
            },
        )
    assert response.status_code == 202, response.text
    record = wait_terminal(client.get, "diarize-upload", timeout_s=300)
    assert record["status"] == "completed", record
    transcript = record["result"]["transcript"]
    assert transcript["speakers"] == [
        {
            "speaker": "President",
            "talk_time_s": transcript["speakers"][0]["talk_time_s"],
            "known": True,
        }
    ]
    assert {s["speaker"] for s in transcript["segments"]} == {"President"}


# --------------------------------------------------------------------------- units


def test_labelling_splits_segments_at_a_change_and_keeps_word_details() -> None:
    words = [
        Word(start=0.1, end=0.5, word=" Hello", probability=0.9),
        Word(start=0.6, end=1.9, word=" there.", probability=0.8),
        Word(start=2.5, end=3.0, word=" Hi", probability=0.7),
        Word(start=3.1, end=3.5, word=" back.", probability=0.6),
    ]
    transcript = Transcript(
        text=" Hello there. Hi back. Bye.",
        language="en",
        duration_s=6.0,
        segments=[
            Segment(
                id=0,
                start=0.0,
                end=3.6,
                text=" Hello there. Hi back.",
                avg_logprob=-0.2,
                no_speech_prob=0.01,
                words=words,
                tokens=[1, 2, 3],
            ),
            Segment(
                id=1,
                start=4.0,
                end=5.0,
                text=" Bye.",
                avg_logprob=-0.3,
                no_speech_prob=0.02,
                tokens=[4],
            ),
        ],
    )
    turns = [Turn(0.0, 2.0, "Ann"), Turn(2.4, 5.0, "SPEAKER_01")]
    labelled = label_transcript(transcript, turns, known_names={"Ann"})
    assert [(s.id, s.text, s.speaker, s.tokens) for s in labelled.segments] == [
        (0, " Hello there.", "Ann", None),
        (1, " Hi back.", "SPEAKER_01", None),
        (2, " Bye.", "SPEAKER_01", [4]),
    ]
    assert [w.probability for w in labelled.segments[1].words or ()] == [0.7, 0.6]
    assert [w.speaker for s in labelled.segments for w in s.words or ()] == ["Ann"] * 2 + [
        "SPEAKER_01"
    ] * 2
    assert labelled.speakers == [
        SpeakerTalk(speaker="Ann", talk_time_s=2.0, known=True),
        SpeakerTalk(speaker="SPEAKER_01", talk_time_s=2.6, known=False),
    ]
    assert labelled.text == transcript.text


def test_renderers_mark_speakers_and_leave_undiarized_transcripts_alone() -> None:
    def segment(i: int, start: float, text: str, speaker: str | None) -> Segment:
        return Segment(
            id=i,
            start=start,
            end=start + 1,
            text=text,
            avg_logprob=0,
            no_speech_prob=0,
            speaker=speaker,
        )

    diarized = Transcript(
        text=" One. Two. 3 < 4 & so.",
        language="en",
        duration_s=4,
        segments=[
            segment(0, 0, " One.", "Ann"),
            segment(1, 1, " Two.", "Ann"),
            segment(2, 2, " 3 < 4 & so.", "SPEAKER_01"),
        ],
    )
    assert to_text(diarized) == "Ann: One. Two.\nSPEAKER_01: 3 < 4 & so.\n"
    assert "00:00:00,000 --> 00:00:01,000\n[Ann] One.\n" in to_srt(diarized)
    vtt = to_vtt(diarized)
    assert "<v SPEAKER_01>3 &lt; 4 &amp; so.</v>" in vtt
    assert [c.voice for c in webvtt.from_string(vtt)] == ["Ann", "Ann", "SPEAKER_01"]
    plain = diarized.model_copy(
        update={"segments": [s.model_copy(update={"speaker": None}) for s in diarized.segments]}
    )
    assert to_text(plain) == "One. Two. 3 < 4 & so.\n"
    assert "<v" not in to_vtt(plain) and "[" not in to_srt(plain)
    assert "speaker" not in plain.model_dump_json() and "speakers" not in plain.model_dump()
