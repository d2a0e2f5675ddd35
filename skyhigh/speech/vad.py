"""Voice activity detection: find the speech in a clip so that only speech is decoded.

Silero VAD (the ONNX model that ships inside the faster-whisper wheel, so it works offline and for
both engines) gives a speech probability per 32 ms; `find_chunks` turns the speech spans into
decoding chunks the way faster-whisper's batched pipeline does: spans are padded, long ones are
split at a pause (or hard, at `max_chunk_s`), and neighbouring spans are concatenated, silences
left out and a second of silence put at each seam, until a chunk would pass `max_chunk_s` (at
most one 30-second Whisper window).

A `SpeechChunk` remembers where each of its pieces came from, so a time inside the chunk maps back
to the original audio (`to_original`): Whisper never sees the silences and cannot write text
into them, yet every segment and word keeps its place in the clip the client sent.

    chunks = find_chunks(audio, VadOptions(min_silence_ms=500))
    for chunk in chunks:
        decode(chunk.audio(audio))          # speech only
        chunk.to_original(1.25)             # chunk seconds -> clip seconds
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from skyhigh.config import SpeechSettings
from skyhigh.speech.samples import SAMPLE_RATE, FloatArray
from skyhigh.speech.samples import WINDOW_S as WHISPER_WINDOW_S

# Silence put between joined spans. Measured on tests' paused clip: with the pauses simply cut
# out, Whisper ran an utterance into the one after the cut and timed its first word 6 s early.
SEAM_SILENCE_S: Final = 1.0
SEAM: Final = int(SEAM_SILENCE_S * SAMPLE_RATE)

_model_lock = threading.Lock()


@dataclass(frozen=True, kw_only=True)
class VadOptions:
    """How speech is told from silence (the WHISPER_VAD_* settings)."""

    # Speech probability above which a 32 ms frame is speech. 0.5 with a 2 s minimum silence
    # measured best (bench/wer_harness.py): 0.3 alone lets noise and breath into chunks, 0.5
    # alone cuts speech into short chunks with little context; together, soft onsets inside
    # a turn (JFK's "ask not" peaks at 0.31) stay inside the span the 2 s bridge keeps open.
    threshold: float = 0.5
    min_silence_ms: int = 2000  # a pause must last this long to end a speech span
    speech_pad_ms: int = 400  # kept on each side of a span, so soft word edges are not clipped
    max_chunk_s: float = WHISPER_WINDOW_S  # longest chunk handed to Whisper

    @classmethod
    def from_settings(cls, settings: SpeechSettings) -> VadOptions:
        return cls(
            threshold=settings.whisper_vad_threshold,
            min_silence_ms=settings.whisper_vad_min_silence_ms,
            speech_pad_ms=settings.whisper_vad_speech_pad_ms,
            max_chunk_s=settings.whisper_vad_max_chunk_s,
        )


@dataclass(frozen=True)
class SpeechChunk:
    """Speech spans of the original audio, joined into one piece to decode.

    `spans` are (start, end) sample offsets into the original audio, in order and disjoint. In
    the chunk they are separated by `SEAM_SILENCE_S` of silence: the pause between them is cut
    out, but Whisper still hears a pause there, so its times do not run one span into the next.
    """

    spans: tuple[tuple[int, int], ...]
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        starts, position = [], 0
        for start, end in self.spans:
            starts.append(position)
            position += end - start + SEAM
        object.__setattr__(self, "_starts", tuple(starts))

    @property
    def samples(self) -> int:
        start, end = self.spans[-1]
        return self._starts[-1] + end - start

    @property
    def duration_s(self) -> float:
        return self.samples / SAMPLE_RATE

    @property
    def start_s(self) -> float:
        return self.spans[0][0] / SAMPLE_RATE

    def audio(self, audio: FloatArray) -> FloatArray:
        """The chunk's samples: its spans of `audio`, with a short silence at each seam."""
        pieces: list[FloatArray] = []
        for index, (start, end) in enumerate(self.spans):
            if index:
                pieces.append(np.zeros(SEAM, dtype=np.float32))
            pieces.append(audio[start:end])
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def _span_at(self, sample: float) -> int:
        return max(bisect.bisect_right(self._starts, sample) - 1, 0)

    def _chunk_end(self, index: int) -> int:
        start, end = self.spans[index]
        return self._starts[index] + end - start

    def to_original(self, t: float, *, end: bool = False, span: int | None = None) -> float:
        """Map seconds inside the chunk to seconds in the original audio.

        A time in a seam's silence goes to the nearer speech: a start to the span after the
        seam, an end to the span before it. `span` pins the mapping to one span (clamped to it).
        """
        sample = t * SAMPLE_RATE
        index = self._span_at(sample) if span is None else span
        if span is None and sample > self._chunk_end(index) and index + 1 < len(self.spans):
            index = index if end else index + 1  # in the seam after span `index`
        start, stop = self.spans[index]
        position = start + (sample - self._starts[index])
        return float(min(max(position, start), stop)) / SAMPLE_RATE

    def word_span(self, start: float, end: float) -> int:
        """The span a word belongs to: the one it overlaps most (none: the one after the seam
        it lies in, as a word's start drifts early into the pause before it)."""
        a, b = start * SAMPLE_RATE, end * SAMPLE_RATE
        overlaps = [
            min(b, self._chunk_end(i)) - max(a, self._starts[i]) for i in range(len(self.spans))
        ]
        best = max(range(len(overlaps)), key=overlaps.__getitem__)
        if overlaps[best] > 0:
            return best
        return min(self._span_at(b) + 1, len(self.spans) - 1)


def find_chunks(audio: FloatArray, options: VadOptions) -> list[SpeechChunk]:
    """The clip's speech, as chunks of at most `options.max_chunk_s` seconds (none: silence)."""
    return merge_spans(speech_spans(audio, options), max_chunk_s=options.max_chunk_s)


def speech_spans(audio: FloatArray, options: VadOptions) -> list[tuple[int, int]]:
    """Padded speech spans (sample offsets) as Silero VAD finds them."""
    from faster_whisper.vad import VadOptions as SileroOptions
    from faster_whisper.vad import get_speech_timestamps

    if len(audio) == 0:
        return []
    _load_model()
    silero = SileroOptions(
        threshold=options.threshold,
        min_silence_duration_ms=options.min_silence_ms,
        speech_pad_ms=options.speech_pad_ms,
        max_speech_duration_s=options.max_chunk_s,
    )
    found: list[dict[str, Any]] = get_speech_timestamps(audio, silero, sampling_rate=SAMPLE_RATE)
    return [(int(span["start"]), int(span["end"])) for span in found if span["end"] > span["start"]]


def merge_spans(
    spans: Sequence[tuple[int, int]], *, max_chunk_s: float = WHISPER_WINDOW_S
) -> list[SpeechChunk]:
    """Join consecutive spans into chunks of at most `max_chunk_s` seconds (seams included).

    A span longer than the limit (Silero splits at `max_speech_duration_s`, so only by a few
    samples of padding) is cut into pieces that fit.
    """
    limit = int(max_chunk_s * SAMPLE_RATE)
    pieces: list[tuple[int, int]] = []
    for start, end in spans:
        while end - start > limit:
            pieces.append((start, start + limit))
            start += limit
        pieces.append((start, end))
    chunks: list[SpeechChunk] = []
    current: list[tuple[int, int]] = []
    length = 0
    for start, end in pieces:
        if current and length + SEAM + (end - start) > limit:
            chunks.append(SpeechChunk(tuple(current)))
            current, length = [], 0
        length += (SEAM if current else 0) + end - start
        current.append((start, end))
    if current:
        chunks.append(SpeechChunk(tuple(current)))
    return chunks


def _load_model() -> None:
    # faster-whisper caches the ONNX session (lru_cache); build it once, under a lock, so two
    # worker threads starting together do not both load it.
    from faster_whisper.vad import get_vad_model

    with _model_lock:
        get_vad_model()


def warm_up() -> None:
    """Load the Silero model now (at startup) rather than on the first clip."""
    _load_model()
