"""Steps both engines share on every path: the language, segments, the transcript."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from skyhigh.domain.events import Segment, Transcript, Word
from skyhigh.speech.samples import SAMPLE_RATE, FloatArray


def language_of(
    requested: str | None,
    sample: FloatArray,
    *,
    multilingual: bool,
    detect: Callable[[FloatArray], tuple[str, float]],
) -> tuple[str, float | None]:
    """The language to decode in, and its probability when it was detected (else None).

    English-only models are English; a language the client named is used as is; otherwise it is
    detected on `sample` (the first speech when VAD found some).
    """
    if not multilingual:
        return "en", None
    if requested is not None:
        return requested, None
    return detect(sample)


def segment_from(index: int, raw: Mapping[str, Any]) -> Segment:
    """A segment from either library's fields (openai-whisper's dicts, faster-whisper's
    dataclasses as dicts), numbered `index` in the transcript."""
    words = raw.get("words")
    return Segment(
        id=index,
        start=float(raw["start"]),
        end=float(raw["end"]),
        text=str(raw["text"]),
        avg_logprob=float(raw["avg_logprob"]),
        no_speech_prob=float(raw["no_speech_prob"]),
        words=None if words is None else [word_from(w) for w in words],
        seek=int(raw["seek"]),
        tokens=[int(token) for token in raw["tokens"]],
        temperature=float(raw["temperature"]),
        compression_ratio=float(raw["compression_ratio"]),
    )


def word_from(raw: Mapping[str, Any]) -> Word:
    return Word(
        word=str(raw["word"]),
        start=float(raw["start"]),
        end=float(raw["end"]),
        probability=float(raw["probability"]),
    )


def transcript_of(
    segments: Sequence[Segment],
    *,
    language: str,
    probability: float | None,
    audio: FloatArray,
) -> Transcript:
    return Transcript(
        text="".join(segment.text for segment in segments).strip(),
        language=language,
        language_probability=probability,
        duration_s=len(audio) / SAMPLE_RATE,
        segments=list(segments),
    )
