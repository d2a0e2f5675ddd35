"""Voice activity detection: only speech is decoded, and times map back to the clip.

The clip (tests/paused_speech.py) is real speech of two speakers with 3-8 s pauses, low noise and
a 10 s silent tail; where its speech is is known from measurements independent of Silero.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import whisper

from skyhigh.config import Settings
from skyhigh.domain.events import Transcript, Word
from skyhigh.speech.chunk_decoder import Decoded, split_by_timestamps
from skyhigh.speech.decoding import BEST_OF, COMPRESSION_RATIO_THRESHOLD, TEMPERATURES
from skyhigh.speech.pool import TranscriberPool
from skyhigh.speech.protocol import TranscribeOptions, Transcriber
from skyhigh.speech.vad import SEAM_SILENCE_S, SpeechChunk, VadOptions, find_chunks, merge_spans
from tests.paused_speech import PausedClip, paused_clip
from tests.speech_helpers import normalise, wer

ENGINES = ["openai-whisper", "faster-whisper"]
SR = 16_000
SLACK_S = 0.5  # how far a word may lie outside its speech region

Engine = Literal["openai-whisper", "faster-whisper"]


def _settings(engine: Engine, model: str, **overrides: Any) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        whisper_engine=engine,
        whisper_model=model,
        whisper_cpu_threads=2,
        **overrides,
    )


@pytest.fixture(scope="module")
def clip() -> PausedClip:
    return paused_clip()


@pytest.fixture(scope="module", params=ENGINES)
def base_transcript(request: pytest.FixtureRequest, clip: PausedClip) -> Transcript:
    """The default `base` weights, VAD at its defaults; one decode serves the checks below.
    Greedy on both engines: VAD decides what is decoded, not the beam (openai-whisper's beam-5
    default took 18 s here against 12 s; tests/test_accuracy.py bounds the defaults' WER)."""
    transcriber = TranscriberPool.from_settings(_settings(request.param, "base").speech)
    options = TranscribeOptions(word_timestamps=True, beam_size=1)
    return transcriber.transcribe(clip.audio, options)


def _words(transcript: Transcript) -> list[Word]:
    return [word for segment in transcript.segments for word in segment.words or []]


@pytest.mark.slow
def test_paused_speech_word_error_rate_with_base(
    base_transcript: Transcript, clip: PausedClip
) -> None:
    # speaches (Silero VAD + faster-whisper batched) reached 0.16 on a held-out paused call.
    assert wer(clip.reference, base_transcript.text) <= 0.15, base_transcript.text
    assert base_transcript.language == "en"  # detected on speech (base is multilingual)


@pytest.mark.slow
def test_no_word_repeated_more_than_three_times(base_transcript: Transcript) -> None:
    words = normalise(base_transcript.text).split()
    runs = [len(list(group)) for group in _groups(words)]
    assert max(runs) <= 3, base_transcript.text


def _groups(words: list[str]) -> list[list[str]]:
    groups: list[list[str]] = []
    for word in words:
        if groups and groups[-1][0] == word:
            groups[-1].append(word)
        else:
            groups.append([word])
    return groups


@pytest.mark.slow
def test_no_text_in_the_silent_tail(base_transcript: Transcript, clip: PausedClip) -> None:
    tail = clip.tail_start_s + SLACK_S
    assert base_transcript.duration_s == pytest.approx(clip.duration_s)
    assert all(segment.end <= tail for segment in base_transcript.segments)
    assert all(word.end <= tail for word in _words(base_transcript))


@pytest.mark.slow
def test_words_lie_in_the_speech_they_belong_to(
    base_transcript: Transcript, clip: PausedClip
) -> None:
    words = _words(base_transcript)
    assert len(words) >= 100
    by_region: list[list[str]] = [[] for _ in clip.regions]
    for word in words:
        inside = [
            index
            for index, (start, end) in enumerate(clip.regions)
            if start - SLACK_S <= word.start <= word.end <= end + SLACK_S
        ]
        assert inside, f"{word} lies outside every speech region {clip.regions}"
        by_region[inside[0]].append(word.word)
    # ... and in the right one: each region's words are that piece's text.
    for text, region_words in zip(clip.texts, by_region, strict=True):
        assert wer(text, "".join(region_words)) <= 0.3, (text, region_words)
    # Segments map back too.
    for segment in base_transcript.segments:
        start, end = segment.start, segment.end
        assert any(a - SLACK_S <= start < end <= b + SLACK_S for a, b in clip.regions), segment


# --------------------------------------------------------------------------- VAD off


def _time_in_pauses(transcript: Transcript, clip: PausedClip) -> float:
    """Seconds of segments lying in the clip's pauses (more than SLACK_S from any speech)."""
    total = 0.0
    for segment in transcript.segments:
        grid = np.arange(segment.start, segment.end, 0.01)
        speech = np.zeros(len(grid), dtype=bool)
        for start, end in clip.regions:
            speech |= (grid >= start - SLACK_S) & (grid <= end + SLACK_S)
        total += 0.01 * float((~speech).sum())
    return total


def _first_turns(clip: PausedClip, turns: int) -> PausedClip:
    """The clip's first `turns` pieces, each with the silence after it (the rest cut off)."""
    end = clip.regions[turns][0] - SLACK_S  # before the next piece's speech
    cut = round(end * SR)
    return replace(
        clip,
        audio=clip.audio[:cut],
        reference=" ".join(clip.texts[:turns]),
        regions=clip.regions[:turns],
        texts=clip.texts[:turns],
    )


@pytest.mark.slow  # three decodes of the clip's first three turns (VAD off, whisper, VAD on)
def test_vad_off_is_the_sequential_transcribe_of_before(
    model_cache: Path, tiny_whisper_model: Any, clip: PausedClip
) -> None:
    clip = _first_turns(clip, 3)  # 3-8 s pauses and more than one 30 s window, half the decoding
    # Greedy throughout: which windows are decoded does not depend on the beam.
    settings = _settings("openai-whisper", "tiny.en", model_cache_dir=model_cache)
    vad_off = _settings("openai-whisper", "tiny.en", model_cache_dir=model_cache, whisper_vad=False)
    greedy = TranscribeOptions(beam_size=1)
    off = TranscriberPool.from_settings(vad_off.speech).transcribe(clip.audio, greedy)

    # Exactly whisper.transcribe with the service's options, window after window over silence.
    plain = whisper.transcribe(
        tiny_whisper_model,
        clip.audio,
        temperature=TEMPERATURES,
        compression_ratio_threshold=COMPRESSION_RATIO_THRESHOLD,
        logprob_threshold=-1.0,
        no_speech_threshold=0.6,
        condition_on_previous_text=False,
        beam_size=None,  # greedy (whisper runs a 1-wide beam for 1)
        best_of=BEST_OF,
        fp16=False,
    )
    assert [(s.start, s.end, s.text) for s in off.segments] == [
        (s["start"], s["end"], s["text"]) for s in plain["segments"]
    ]

    # The setting does something: without VAD, segments run seconds into the pauses; with it,
    # they stay on the speech.
    on = TranscriberPool.from_settings(settings.speech).transcribe(clip.audio, greedy)
    assert _time_in_pauses(off, clip) > 2.0, off.segments
    assert _time_in_pauses(on, clip) < 0.25, on.segments


def test_silence_is_not_decoded(model_cache: Path) -> None:
    transcriber: Transcriber = TranscriberPool.from_settings(
        _settings("faster-whisper", "tiny.en", model_cache_dir=model_cache).speech
    )
    rng = np.random.default_rng(1)
    hiss = (rng.standard_normal(20 * SR) * 0.002).astype(np.float32)
    assert find_chunks(hiss, VadOptions()) == []
    transcript = transcriber.transcribe(hiss, TranscribeOptions())
    assert (transcript.text, transcript.segments) == ("", [])


# --------------------------------------------------------------------------- chunk arithmetic


def test_spans_join_into_chunks_of_at_most_30_seconds() -> None:
    spans = [(0, 10 * SR), (20 * SR, 35 * SR), (40 * SR, 75 * SR)]
    chunks = merge_spans(spans, max_chunk_s=30)
    # 10 s + seam + 15 s fits; the 35 s span is split at 30 s.
    assert [c.spans for c in chunks] == [
        ((0, 10 * SR), (20 * SR, 35 * SR)),
        ((40 * SR, 70 * SR),),
        ((70 * SR, 75 * SR),),
    ]
    assert all(c.duration_s <= 30 for c in chunks)
    assert chunks[0].duration_s == pytest.approx(25 + SEAM_SILENCE_S)


def test_chunk_times_map_back_across_a_seam() -> None:
    chunk = SpeechChunk(((2 * SR, 5 * SR), (40 * SR, 43 * SR)))
    audio = np.arange(50 * SR, dtype=np.float32)
    joined = chunk.audio(audio)
    assert len(joined) == chunk.samples == (6 + SEAM_SILENCE_S) * SR
    assert joined[0] == 2 * SR and joined[-1] == 43 * SR - 1
    seam_end = 3 + SEAM_SILENCE_S
    assert chunk.to_original(1.0) == 3.0
    assert chunk.to_original(seam_end + 0.5) == 40.5
    # In the seam's silence a start belongs to the speech after it, an end to the speech before.
    assert chunk.to_original(3.4) == 40.0
    assert chunk.to_original(3.4, end=True) == 5.0
    # A word drifting early into the seam goes with the speech it overlaps, or the one after.
    assert chunk.word_span(3.2, seam_end + 0.3) == 1
    assert chunk.word_span(2.7, 3.3) == 0
    assert chunk.word_span(3.1, 3.5) == 1


def test_tokens_split_into_segments_at_timestamp_pairs() -> None:
    begin = 1000  # stands in for the tokenizer's first timestamp token

    def stamp(seconds: float) -> int:
        return begin + round(seconds / 0.02)

    def split(tokens: list[int]) -> list[tuple[float, float, str]]:
        result = Decoded(tokens, "", -0.2, 0.01, 0.0)
        segments = split_by_timestamps(
            result,
            timestamp_begin=begin,
            duration_s=9.0,
            decode_text=lambda ids: "".join(chr(96 + i) for i in ids),
        )
        return [(s.start, s.end, s.text) for s in segments]

    # Two closed segments; then an unfinished one, kept up to the chunk's end.
    assert split([stamp(0), 1, 2, stamp(2), stamp(2.5), 3, stamp(4)]) == [
        (0.0, 2.0, "ab"),
        (2.5, 4.0, "c"),
    ]
    assert split([stamp(0), 1, stamp(1), stamp(1.5), 2, 3]) == [(0.0, 1.0, "a"), (1.5, 9.0, "bc")]
    # No pair at all: one segment, ending at its last timestamp; past the chunk, at the chunk.
    assert split([stamp(0.2), 1, 2, stamp(3)]) == [(0.2, 3.0, "ab")]
    assert split([stamp(0), 1, stamp(12)]) == [(0.0, 9.0, "a")]
    assert split([stamp(0), stamp(5)]) == []  # no text


def test_vad_options_come_from_settings() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        whisper_vad_threshold=0.6,
        whisper_vad_min_silence_ms=900,
        whisper_vad_speech_pad_ms=100,
        whisper_vad_max_chunk_s=20,
    )
    assert VadOptions.from_settings(settings.speech) == VadOptions(
        threshold=0.6, min_silence_ms=900, speech_pad_ms=100, max_chunk_s=20
    )
