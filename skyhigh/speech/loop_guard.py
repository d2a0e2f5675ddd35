"""The repetition-loop guard: a chunk whose text loops is decoded again, split at shorter pauses.

With the default 2 s minimum silence, long continuous speech becomes one 30 s chunk, and a
chunk of repeated speech (a looped announcement, JFK four times over) can decode into a
repetition loop: one phrase over and over, far past the speech (WER 1.66 against 0.23 split at
500 ms, BENCHMARKS.md "Speech"). Whisper's temperature fallback already runs on such a chunk and
does not break the loop, because the true text repeats too and fails the same check.

A chunk's text whose compression ratio is above the engines' threshold (the same check that
starts the fallback) is decoded again: Silero VAD runs over the chunk's speech with
WHISPER_LOOP_GUARD_MIN_SILENCE_MS, and the pieces it finds are joined into chunks as usual
(skyhigh.speech.vad). Of the two readings, the one whose text compresses less is kept: a loop
compresses far better than the speech it stands for. A chunk whose text does not repeat costs
nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence

from skyhigh.speech.batching import ChunkRunner
from skyhigh.speech.chunk_decoder import ChunkSegment, DecodeKey, compression_ratio
from skyhigh.speech.deadline import Deadline
from skyhigh.speech.decoding import COMPRESSION_RATIO_THRESHOLD
from skyhigh.speech.samples import FloatArray
from skyhigh.speech.vad import SpeechChunk, VadOptions, merge_spans, speech_spans

Decoded = list[tuple[SpeechChunk, list[ChunkSegment]]]


def text_of(segments: Sequence[ChunkSegment]) -> str:
    return " ".join(segment.text.strip() for segment in segments)


def loops(segments: Sequence[ChunkSegment]) -> bool:
    """Whether a chunk's text repeats as a repetition loop does (compression ratio)."""
    return compression_ratio(text_of(segments)) > COMPRESSION_RATIO_THRESHOLD


def split_finer(audio: FloatArray, chunk: SpeechChunk, vad: VadOptions) -> list[SpeechChunk]:
    """The chunk's speech found again with `vad` (shorter pauses), joined into chunks."""
    spans: list[tuple[int, int]] = []
    for start, end in chunk.spans:
        spans.extend((start + a, start + b) for a, b in speech_spans(audio[start:end], vad))
    return merge_spans(spans, max_chunk_s=vad.max_chunk_s) if spans else []


def guarded(
    audio: FloatArray,
    chunk: SpeechChunk,
    segments: list[ChunkSegment],
    *,
    runner: ChunkRunner,
    key: DecodeKey,
    vad: VadOptions,
    deadline: Deadline | None,
) -> Decoded:
    """`[(chunk, segments)]`, or the chunk's finer pieces and theirs when that reads better."""
    if not segments or not loops(segments):
        return [(chunk, segments)]
    pieces = split_finer(audio, chunk, vad)
    if not pieces or pieces == [chunk]:
        return [(chunk, segments)]  # no shorter pause to split at: nothing else to try
    decoded = list(runner.run([p.audio(audio) for p in pieces], key, deadline=deadline))
    again = text_of([segment for piece in decoded for segment in piece])
    if again and compression_ratio(again) < compression_ratio(text_of(segments)):
        return list(zip(pieces, decoded, strict=True))
    return [(chunk, segments)]
