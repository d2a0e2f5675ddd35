"""Speech accuracy at the default settings, on both engines, on the WER harness's real recordings.

The recordings (bench.wer_recordings) are real read speech with pauses between turns and the
same speech through a telephone channel (300-3400 Hz, 8 kHz mu-law). The bounds sit between
what the defaults chosen from bench.wer_harness's sweep measured and what the defaults before
them measured (BENCHMARKS.md "Speech"), so going back to the old decoding or VAD settings fails:

    pooled WER of jfk-phone, sonnet-pauses, call-phone (270 reference words)
    engine           before (beam 1, VAD 0.3 / 500 ms)   defaults (VAD 0.5 / 2 s)          bound
    faster-whisper   0.130                               0.111 (greedy; beam 5: 0.107)      0.120
    openai-whisper   0.148                               0.100 (beam 5; greedy: 0.119)      0.115

Each engine's `base` model is loaded once for the module; the recordings are built once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final

import pytest

from bench.wer_harness import score
from bench.wer_recordings import Recording, recording
from skyhigh.config import Settings
from skyhigh.domain.events import Transcript
from skyhigh.speech.chunk_decoder import ChunkSegment, Decoded, DecodeKey, decode_with_fallback
from skyhigh.speech.deadline import Deadline
from skyhigh.speech.decoding import DecodingSettings
from skyhigh.speech.pool import TranscriberPool
from skyhigh.speech.protocol import TranscribeOptions
from skyhigh.speech.samples import FloatArray
from skyhigh.speech.speech_only import transcribe_speech
from skyhigh.speech.vad import VadOptions

ENGINES: Final = ("openai-whisper", "faster-whisper")
SCORED: Final = ("jfk-phone", "sonnet-pauses", "call-phone")
BOUNDS: Final = {"faster-whisper": 0.120, "openai-whisper": 0.115}
SPEECH_S: Final = (8.0, 19.0)  # where jfk-silence's speech is: 8 s of near-silence each side


@pytest.fixture(scope="module")
def recordings() -> dict[str, Recording]:
    return {name: recording(name) for name in (*SCORED, "jfk-silence")}


@pytest.fixture(scope="module", params=ENGINES)
def transcripts(
    request: pytest.FixtureRequest, recordings: dict[str, Recording]
) -> dict[str, Transcript]:
    """Each recording transcribed by `base` at the default settings (English named)."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        whisper_engine=request.param,
        whisper_model="base",
        whisper_cpu_threads=2,
    )
    pool = TranscriberPool.from_settings(settings.speech)
    try:
        options = TranscribeOptions(language="en")
        return {name: pool.transcribe(rec.audio, options) for name, rec in recordings.items()}
    finally:
        pool.close()


def _engine(request: Any) -> str:
    return str(request.node.callspec.params["transcripts"])


@pytest.mark.slow
def test_paused_and_telephone_speech_within_the_bound(
    request: pytest.FixtureRequest,
    transcripts: dict[str, Transcript],
    recordings: dict[str, Recording],
) -> None:
    from whisper.normalizers import EnglishTextNormalizer

    normalise = EnglishTextNormalizer()
    scores = [score(normalise, recordings[n].reference, transcripts[n].text) for n in SCORED]
    errors, words = (sum(column) for column in zip(*scores, strict=True))
    texts = {name: transcripts[name].text for name in SCORED}
    assert errors / words <= BOUNDS[_engine(request)], (errors, words, texts)


@pytest.mark.slow
def test_nothing_is_invented_in_silence(transcripts: dict[str, Transcript]) -> None:
    transcript = transcripts["jfk-silence"]
    assert transcript.segments, "the speech between the silences was lost"
    for segment in transcript.segments:
        assert SPEECH_S[0] - 0.5 <= segment.start and segment.end <= SPEECH_S[1] + 0.5, segment


# --------------------------------------------------------------------------- the settings' effect


class _PromptRecorder:
    """A ChunkRunner that answers each chunk with a numbered sentence and records the prompts."""

    def __init__(self) -> None:
        self.prompts: list[str | None] = []

    def detect_language(self, audio: FloatArray) -> tuple[str, float]:
        return "en", 1.0

    def run(
        self, audios: Sequence[FloatArray], key: DecodeKey, *, deadline: Deadline | None = None
    ) -> Iterator[list[ChunkSegment]]:
        for _ in audios:
            self.prompts.append(key.initial_prompt)
            text = f" Sentence {len(self.prompts)}."
            yield [ChunkSegment(0.0, 1.0, text, [], -0.2, 0.01, 1.0, 0.0)]


@pytest.mark.parametrize("condition", [False, True])
def test_condition_prompts_each_chunk_with_the_one_before(
    condition: bool, recordings: dict[str, Recording]
) -> None:
    runner = _PromptRecorder()
    options = TranscribeOptions(language="en", initial_prompt="Glossary.")
    transcribe_speech(
        recordings["sonnet-pauses"].audio,  # three readings 4 s and 6 s apart
        options,
        runner=runner,
        vad=VadOptions(max_chunk_s=25),  # too short to merge two readings: one chunk each
        multilingual=False,
        condition=condition,
    )
    assert len(runner.prompts) >= 3
    if condition:
        after = [f"Glossary. Sentence {n}." for n in range(1, len(runner.prompts))]
        assert runner.prompts == ["Glossary.", *after]
    else:
        assert runner.prompts == ["Glossary."] * len(runner.prompts)


@pytest.mark.parametrize("fallback", [True, False])
def test_temperature_fallback_setting(fallback: bool) -> None:
    settings = Settings(_env_file=None, whisper_temperature_fallback=fallback)  # type: ignore[call-arg]
    policy = DecodingSettings.from_settings(settings.speech).policy
    temperatures: list[float] = []

    def improbable(indices: list[int], temperature: float) -> list[Decoded]:
        temperatures.append(temperature)
        return [Decoded([1], "uh", -3.0, 0.1, temperature) for _ in indices]

    decode_with_fallback(1, improbable, policy)
    assert temperatures == ([0.0, 0.2, 0.4, 0.6, 0.8, 1.0] if fallback else [0.0])
