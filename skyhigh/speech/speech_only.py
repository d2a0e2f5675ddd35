"""Transcribe only the speech of a clip: VAD, language detection on speech, chunks in batches.

The path both engines take when WHISPER_VAD is on (the default):

1. Silero VAD finds the speech; it is cut into chunks of at most 30 s (skyhigh.speech.vad).
2. Unless the client named the language, it is detected on the first chunk, i.e. on speech,
   never on leading silence or music (English-only models are English).
3. The chunks are decoded by a `ChunkRunner` (skyhigh.speech.batching), in batches.
4. Segment and word times map back from chunk time to the clip's time; each segment is reported
   to `on_segment` as soon as its chunk is decoded, in order.
"""

from __future__ import annotations

from collections.abc import Callable

from skyhigh.domain.events import Segment, Transcript, Word
from skyhigh.speech.batching import ChunkRunner
from skyhigh.speech.chunk_decoder import ChunkSegment, DecodeKey, FloatArray
from skyhigh.speech.vad import SAMPLE_RATE, SpeechChunk, VadOptions, find_chunks

FRAMES_PER_SECOND = 100  # whisper's `seek` unit (mel frames)


def transcribe_speech(
    audio: FloatArray,
    *,
    language: str | None,
    task: str,
    word_timestamps: bool,
    initial_prompt: str | None,
    runner: ChunkRunner,
    vad: VadOptions,
    multilingual: bool,
    on_segment: Callable[[Segment], None] | None = None,
) -> Transcript:
    chunks = find_chunks(audio, vad)
    probability: float | None = None
    if not multilingual:
        language = "en"
    elif language is None:
        # On the first chunk of speech; with none, on the clip itself (as without VAD).
        sample = chunks[0].audio(audio) if chunks else audio
        language, probability = runner.detect_language(sample)
    key = DecodeKey(
        language=language,
        task=task,
        initial_prompt=initial_prompt,
        word_timestamps=word_timestamps,
    )
    segments: list[Segment] = []
    decoded = runner.run([chunk.audio(audio) for chunk in chunks], key) if chunks else iter(())
    for chunk, chunk_segments in zip(chunks, decoded, strict=True):
        for raw in chunk_segments:
            segment = _in_clip_time(len(segments), raw, chunk)
            segments.append(segment)
            if on_segment is not None:
                on_segment(segment)
    return Transcript(
        text="".join(segment.text for segment in segments).strip(),
        language=language,
        language_probability=probability,
        duration_s=len(audio) / SAMPLE_RATE,
        segments=segments,
    )


def _in_clip_time(index: int, raw: ChunkSegment, chunk: SpeechChunk) -> Segment:
    words = None
    if raw.words is not None:
        words = []
        for word in raw.words:
            # A word maps through one span, so it never straddles a pause that was cut out.
            span = chunk.word_span(word.start, word.end)
            words.append(
                Word(
                    word=word.word,
                    start=round(chunk.to_original(word.start, span=span), 3),
                    end=round(chunk.to_original(word.end, span=span), 3),
                    probability=word.probability,
                )
            )
    start = round(chunk.to_original(raw.start), 3)
    end = round(chunk.to_original(raw.end, end=True), 3)
    if words:
        start, end = words[0].start, max(words[-1].end, words[0].start)
    return Segment(
        id=index,
        start=start,
        end=max(end, start),
        text=raw.text,
        avg_logprob=raw.avg_logprob,
        no_speech_prob=raw.no_speech_prob,
        words=words,
        seek=round(chunk.start_s * FRAMES_PER_SECOND),
        tokens=raw.tokens,
        temperature=raw.temperature,
        compression_ratio=round(raw.compression_ratio, 4),
    )
