"""The repetition-loop guard (skyhigh.speech.loop_guard) on real looped speech.

JFK four times over (44 s of continuous repeated speech) is two chunks at the default VAD. A
scripted runner stands in for the model, so what the guard decides, and where the text it keeps
lands in the clip, is checked without decoding; the real decode on both engines is
tests/test_transcriber.py's `test_fallback_heavy_audio_completes`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from skyhigh.config import Settings
from skyhigh.speech.chunk_decoder import ChunkSegment, DecodeKey
from skyhigh.speech.deadline import Deadline
from skyhigh.speech.decode import load_audio
from skyhigh.speech.decoding import DecodingSettings
from skyhigh.speech.protocol import TranscribeOptions
from skyhigh.speech.samples import SAMPLE_RATE, FloatArray
from skyhigh.speech.speech_only import transcribe_speech
from skyhigh.speech.vad import VadOptions, find_chunks
from tests.speech_helpers import ffmpeg, jfk_reference

DATA = Path(__file__).parent / "data"
LOOP = " ask not what your country can do for you," * 12  # what a loop reads like
GUARD = VadOptions(min_silence_ms=500)

Script = Callable[[int], str]  # the n-th model call (from 1) -> the chunk's text


@pytest.fixture(scope="module")
def looped(tmp_path_factory: pytest.TempPathFactory) -> FloatArray:
    path = tmp_path_factory.mktemp("looped") / "jfk4.wav"
    ffmpeg("-stream_loop", "3", "-i", str(DATA / "jfk.wav"), "-ar", "16000", "-ac", "1", str(path))
    audio: FloatArray = load_audio(path, max_seconds=120)
    return audio


class ScriptedRunner:
    """A ChunkRunner whose chunks read as `script` says: one segment over the whole chunk."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.durations: list[float] = []

    def detect_language(self, audio: FloatArray) -> tuple[str, float]:
        return "en", 1.0

    def run(
        self, audios: Sequence[FloatArray], key: DecodeKey, *, deadline: Deadline | None = None
    ) -> Iterator[list[ChunkSegment]]:
        for audio in audios:
            self.durations.append(len(audio) / SAMPLE_RATE)
            text = self.script(len(self.durations))
            yield [ChunkSegment(0.0, self.durations[-1], text, [], -0.2, 0.01, 1.0, 0.0)]


def _transcribe(audio: FloatArray, script: Script, guard: VadOptions | None) -> Any:
    runner = ScriptedRunner(script)
    transcript = transcribe_speech(
        audio,
        TranscribeOptions(language="en"),
        runner=runner,
        vad=VadOptions(),
        multilingual=False,
        loop_guard=guard,
    )
    return transcript, runner.durations


def _calls(transcript: Any) -> list[int]:
    """Which model call each segment's text came from."""
    return [int(s.text.rsplit("(", 1)[1].rstrip(")")) for s in transcript.segments]


def test_a_looping_chunk_is_decoded_again_split_at_shorter_pauses(looped: FloatArray) -> None:
    chunks = find_chunks(looped, VadOptions())
    assert len(chunks) == 2  # 0-26.7 s and 27.1-44 s: no 2 s pause in between

    def first_loops(call: int) -> str:
        return LOOP if call == 1 else f" {jfk_reference()} ({call})"

    transcript, durations = _transcribe(looped, first_loops, GUARD)
    assert "(1)" not in transcript.text and LOOP.strip() not in transcript.text
    # The first chunk, then its pieces at 500 ms pauses, then the second chunk (which reads well).
    assert durations[0] == pytest.approx(chunks[0].duration_s)
    pieces = len(durations) - 2
    assert pieces >= 2 and durations[-1] == pytest.approx(chunks[1].duration_s)
    assert _calls(transcript) == list(range(2, pieces + 3))
    # The pieces' text stays inside the first chunk's speech, in order, and covers it.
    first = transcript.segments[:pieces]
    assert first[0].start == pytest.approx(chunks[0].start_s, abs=0.05)
    assert all(a.end <= b.start for a, b in zip(first, first[1:], strict=False))
    assert first[-1].end <= chunks[0].spans[-1][1] / SAMPLE_RATE + 0.05
    assert transcript.segments[pieces].start == pytest.approx(chunks[1].start_s, abs=0.05)


def test_the_first_reading_stays_when_splitting_reads_no_better(looped: FloatArray) -> None:
    transcript, durations = _transcribe(looped, lambda call: f"{LOOP} ({call})", GUARD)
    # Each chunk was tried again in pieces (a loop in every piece), and kept its first reading.
    calls = _calls(transcript)
    assert len(durations) > 4 and len(calls) == 2 and calls[0] == 1
    assert durations[calls[1] - 1] == pytest.approx(find_chunks(looped, VadOptions())[1].duration_s)


@pytest.mark.parametrize("guard", [GUARD, None])
def test_text_that_does_not_loop_is_decoded_once(
    looped: FloatArray, guard: VadOptions | None
) -> None:
    transcript, durations = _transcribe(looped, lambda call: f" {jfk_reference()}", guard)
    assert len(durations) == 2 and len(transcript.segments) == 2


def test_without_the_guard_a_loop_is_kept(looped: FloatArray) -> None:
    transcript, durations = _transcribe(looped, lambda call: LOOP, None)
    assert len(durations) == 2 and transcript.text.count(LOOP.strip()) == 2


def test_the_guard_comes_from_settings() -> None:
    def decoding(**overrides: Any) -> DecodingSettings:
        settings = Settings(_env_file=None, **overrides)  # type: ignore[call-arg]
        return DecodingSettings.from_settings(settings.speech)

    default = decoding()
    assert default.vad is not None
    assert default.loop_guard == replace(default.vad, min_silence_ms=500)
    assert decoding(whisper_loop_guard_min_silence_ms=300).loop_guard == replace(
        default.vad, min_silence_ms=300
    )
    assert decoding(whisper_loop_guard=False).loop_guard is None
    assert decoding(whisper_vad=False).loop_guard is None
