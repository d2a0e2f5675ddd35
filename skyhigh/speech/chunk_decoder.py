"""Decoding speech chunks in batches: the engine-neutral part.

A chunk is at most one 30-second Whisper window of speech (skyhigh.speech.vad). Each engine
implements `ChunkDecoder.decode(audios, key)` for a batch of chunks that share a `DecodeKey`, and
may batch them in one model call; chunks may come from one clip or from several
(skyhigh.speech.batching). What both engines share lives here, so they behave alike:

- `decode_with_fallback`: whisper's temperature fallback, per chunk. The whole batch is decoded
  at temperature 0; only the chunks whose text looks like a repetition loop (compression ratio)
  or is improbable (avg logprob) are decoded again, together, at the next temperature.
- the no-speech gate: a chunk whose no-speech probability is high *and* whose text is improbable
  is dropped, as both libraries' sequential `transcribe` does per window;
- `split_by_timestamps`: a window's tokens become segments at its timestamp pairs. Unlike
  `transcribe`, which would decode the rest of an unfinished last segment in the next window,
  a chunk has no next window (it ends where speech ends), so that text is kept to the chunk's end.

Decoding is greedy at temperature 0 (beam search with WHISPER_BEAM_SIZE > 1); each chunk is
decoded on its own unless WHISPER_CONDITION_ON_PREVIOUS_TEXT carries the previous chunk's text
as its prompt (skyhigh.speech.speech_only).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

from skyhigh.speech.decoding import COMPRESSION_RATIO_THRESHOLD, GatePolicy
from skyhigh.speech.samples import FloatArray

TIME_PRECISION: Final = 0.02  # seconds per timestamp token (both engines)


@dataclass(frozen=True)
class DecodeKey:
    """What must be equal for chunks to share one batch (one prompt, one tokenizer)."""

    language: str
    task: str
    initial_prompt: str | None
    word_timestamps: bool
    beam_size: int | None = None  # None: the engine's (WHISPER_BEAM_SIZE)

    def policy(self, default: GatePolicy) -> GatePolicy:
        """The engine's decoding policy with this key's beam width, when it names one."""
        return default if self.beam_size is None else replace(default, beam_size=self.beam_size)


@dataclass(frozen=True)
class Decoded:
    """One chunk decoded once, at one temperature."""

    tokens: list[int]  # sampled tokens, timestamps included, no start/end-of-text
    text: str
    avg_logprob: float
    no_speech_prob: float
    temperature: float

    @property
    def compression_ratio(self) -> float:
        return compression_ratio(self.text)


@dataclass
class ChunkWord:
    word: str
    start: float
    end: float
    probability: float


@dataclass
class ChunkSegment:
    """A segment with times in seconds from the start of its chunk."""

    start: float
    end: float
    text: str
    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    words: list[ChunkWord] | None = None


class ChunkDecoder(Protocol):
    """An engine's batched decoding of speech chunks (each at most one 30-second window).

    Not thread-safe in general: skyhigh.speech.batching calls one decoder from one thread.
    """

    multilingual: bool

    def decode(self, audios: Sequence[FloatArray], key: DecodeKey) -> list[list[ChunkSegment]]:
        """Segments of each chunk, in order; an empty list for a chunk the gate found silent."""

    def detect_language(self, audio: FloatArray) -> tuple[str, float]:
        """The language of (the first 30 s of) speech, and its probability."""


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


DecodeOnce = Callable[[list[int], float], list[Decoded]]


def decode_with_fallback(count: int, decode_once: DecodeOnce, policy: GatePolicy) -> list[Decoded]:
    """Decode `count` chunks; `decode_once(indices, temperature)` decodes a batch of them.

    Returns each chunk's accepted result. When every temperature fails a chunk, the most
    probable result below the compression threshold is kept (faster-whisper's choice).
    """
    tried: list[list[Decoded]] = [[] for _ in range(count)]
    accepted: list[Decoded | None] = [None] * count
    pending = list(range(count))
    for temperature in policy.temperatures:
        if not pending:
            break
        retry = []
        for index, result in zip(pending, decode_once(pending, temperature), strict=True):
            tried[index].append(result)
            if _needs_fallback(result, policy):
                retry.append(index)
            else:
                accepted[index] = result
        pending = retry
    for index in pending:
        fitting = [
            r for r in tried[index] if r.compression_ratio <= COMPRESSION_RATIO_THRESHOLD
        ] or tried[index]
        accepted[index] = max(fitting, key=lambda r: r.avg_logprob)
    return [result for result in accepted if result is not None]


def _needs_fallback(result: Decoded, policy: GatePolicy) -> bool:
    if is_silent(result, policy):
        return False  # silence: nothing to improve by sampling
    return (
        result.compression_ratio > COMPRESSION_RATIO_THRESHOLD
        or result.avg_logprob < policy.logprob_threshold
    )


def is_silent(result: Decoded, policy: GatePolicy) -> bool:
    """Whisper's no-speech gate: likely silence and an improbable transcript."""
    return (
        result.no_speech_prob > policy.no_speech_threshold
        and result.avg_logprob < policy.logprob_threshold
    )


def split_by_timestamps(
    result: Decoded,
    *,
    timestamp_begin: int,
    duration_s: float,
    decode_text: Callable[[list[int]], str],
) -> list[ChunkSegment]:
    """One chunk's tokens as segments (chunk-relative seconds), empty segments dropped."""
    tokens = result.tokens
    stamps = [token >= timestamp_begin for token in tokens]

    def at(token: int) -> float:
        return (token - timestamp_begin) * TIME_PRECISION

    pieces: list[tuple[float, float, list[int]]] = []
    cuts = [i for i in range(1, len(tokens)) if stamps[i] and stamps[i - 1]]
    if cuts:
        if len(tokens) >= 2 and stamps[-1] and not stamps[-2]:
            cuts.append(len(tokens))  # a single closing timestamp: the last segment is done
        last = 0
        for cut in cuts:
            piece = tokens[last:cut]
            start = at(piece[0]) if stamps[last] else (pieces[-1][1] if pieces else 0.0)
            pieces.append((start, at(piece[-1]) if stamps[cut - 1] else start, piece))
            last = cut
        rest = tokens[last:]
        if rest:  # unfinished: runs to the chunk's end (transcribe would seek there instead)
            start = at(rest[0]) if stamps[last] else pieces[-1][1]
            pieces.append((start, duration_s, rest))
    elif tokens:
        times = [token for token in tokens if token >= timestamp_begin]
        start = at(tokens[0]) if stamps[0] else 0.0
        end = at(times[-1]) if times and times[-1] != timestamp_begin else duration_s
        pieces.append((start, end if end > start else duration_s, tokens))
    segments = []
    for start, end, piece in pieces:
        text = decode_text([token for token in piece if token < timestamp_begin])
        if not text.strip():
            continue
        # Timestamps past the speech (the window is padded to 30 s) are held to the chunk.
        start = min(start, duration_s)
        end = min(max(end, start), duration_s)
        segments.append(
            ChunkSegment(
                start=round(start, 3),
                end=round(end, 3),
                text=text,
                tokens=list(piece),
                avg_logprob=result.avg_logprob,
                no_speech_prob=result.no_speech_prob,
                compression_ratio=result.compression_ratio,
                temperature=result.temperature,
            )
        )
    return segments


def chunk_segments(
    results: Sequence[Decoded],
    durations_s: Sequence[float],
    policy: GatePolicy,
    *,
    timestamp_begin: int,
    decode_text: Callable[[list[int]], str],
    add_words: Callable[[int, list[ChunkSegment], float], None] | None = None,
) -> list[list[ChunkSegment]]:
    """Each chunk's accepted result as segments: empty for a chunk the gate finds silent, and
    `add_words(index, segments, duration_s)` (the engine's alignment) when words were asked."""
    batch: list[list[ChunkSegment]] = []
    for index, (result, duration) in enumerate(zip(results, durations_s, strict=True)):
        if is_silent(result, policy):
            batch.append([])
            continue
        segments = split_by_timestamps(
            result, timestamp_begin=timestamp_begin, duration_s=duration, decode_text=decode_text
        )
        if add_words is not None and segments:
            add_words(index, segments, duration)
        batch.append(segments)
    return batch


def as_words(raw: Sequence[Any]) -> list[ChunkWord]:
    """Word dicts ({word, start, end, probability}, as both libraries return them)."""
    return [
        ChunkWord(
            word=str(w["word"]),
            start=float(w["start"]),
            end=float(w["end"]),
            probability=float(w["probability"]),
        )
        for w in raw
    ]
