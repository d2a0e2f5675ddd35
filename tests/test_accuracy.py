"""Speech accuracy at the default settings, on both engines, on the WER harness's real recordings.

The recordings (bench.wer_recordings) are real read speech with pauses between turns and the
same speech through a telephone channel (300-3400 Hz, 8 kHz mu-law). The bounds sit between
what the defaults chosen from bench.wer_harness's sweep measured and what the defaults before
them measured (BENCHMARKS.md "Speech"), so going back to the old decoding or VAD settings fails:

    engine           old defaults   new defaults   bound   (pooled WER, 270 reference words)
    faster-whisper   0.130          0.100          0.115
    openai-whisper   see BOUNDS

Each engine's `base` model is loaded once for the module; the recordings are built once.
"""

from __future__ import annotations

from typing import Any, Final

import pytest

from bench.wer_harness import score
from bench.wer_recordings import Recording, recording
from skyhigh.config import Settings
from skyhigh.domain.events import Transcript
from skyhigh.speech.pool import TranscriberPool
from skyhigh.speech.protocol import TranscribeOptions

ENGINES: Final = ("openai-whisper", "faster-whisper")
SCORED: Final = ("jfk-phone", "sonnet-pauses", "call-phone")
BOUNDS: Final = {"faster-whisper": 0.115, "openai-whisper": 0.115}
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
