"""Transcribe only the speech of a clip: VAD, language detection on speech, chunks in batches.

The path both engines take when WHISPER_VAD is on (the default):

1. Silero VAD finds the speech; it is cut into chunks of at most 30 s (skyhigh.speech.vad).
2. Unless the client named the language, it is detected on the first chunk, i.e. on speech,
   never on leading silence or music (English-only models are English).
3. The chunks are decoded by a `ChunkRunner` (skyhigh.speech.batching), in batches; the
   deadline is checked before each batch and each chunk's result. With
   WHISPER_CONDITION_ON_PREVIOUS_TEXT they are decoded one at a time instead, each prompted
   with the text of the chunk before it.
4. A chunk whose text loops is decoded again, split at shorter pauses, and the reading that
   repeats less is kept (skyhigh.speech.loop_guard; WHISPER_LOOP_GUARD).
5. Segment and word times map back from chunk time to the clip's time; each segment is reported
   to `on_segment` as soon as its chunk is decoded, in order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Final

from skyhigh.domain.events import Segment, Transcript, Word
from skyhigh.speech.assembly import language_of, transcript_of
from skyhigh.speech.batching import ChunkRunner
from skyhigh.speech.chunk_decoder import ChunkSegment, DecodeKey
from skyhigh.speech.deadline import Deadline, check
from skyhigh.speech.loop_guard import guarded
from skyhigh.speech.protocol import SegmentCallback, TranscribeOptions
from skyhigh.speech.samples import FRAMES_PER_SECOND, FloatArray
from skyhigh.speech.vad import SpeechChunk, VadOptions, find_chunks

MAX_CONDITIONING_TEMPERATURE: Final = 0.5  # whisper's prompt_reset_on_temperature
# Whisper keeps the last 223 prompt tokens; ~4 characters a token, cut here to stay inside it.
MAX_PROMPT_CHARS: Final = 800


def transcribe_speech(
    audio: FloatArray,
    options: TranscribeOptions,
    *,
    runner: ChunkRunner,
    vad: VadOptions,
    multilingual: bool,
    on_segment: SegmentCallback | None = None,
    deadline: Deadline | None = None,
    condition: bool = False,
    loop_guard: VadOptions | None = None,
) -> Transcript:
    """The clip's transcript from its speech alone; `loop_guard` is the VAD a looping chunk is
    split with again (None: no guard)."""
    chunks = find_chunks(audio, vad)
    # On the first chunk of speech; with none, on the clip itself (as without VAD).
    sample = chunks[0].audio(audio) if chunks else audio
    language, probability = language_of(
        options.language, sample, multilingual=multilingual, detect=runner.detect_language
    )
    check(deadline)
    key = DecodeKey(
        language=language,
        task=options.task,
        initial_prompt=options.initial_prompt,
        word_timestamps=options.word_timestamps,
        beam_size=options.beam_size,
    )
    segments: list[Segment] = []
    pieces = [chunk.audio(audio) for chunk in chunks]
    if condition:
        decoded = _conditioned(runner, pieces, key, deadline)
    else:
        decoded = runner.run(pieces, key, deadline=deadline) if chunks else iter(())
    for chunk, chunk_segments in zip(chunks, decoded, strict=True):
        readings = [(chunk, chunk_segments)]
        if loop_guard is not None:
            check(deadline)
            readings = guarded(
                audio,
                chunk,
                chunk_segments,
                runner=runner,
                key=key,
                vad=loop_guard,
                deadline=deadline,
            )
        for piece, piece_segments in readings:
            for raw in piece_segments:
                segment = _in_clip_time(len(segments), raw, piece)
                segments.append(segment)
                if on_segment is not None:
                    on_segment(segment)
    return transcript_of(segments, language=language, probability=probability, audio=audio)


def _conditioned(
    runner: ChunkRunner, pieces: list[FloatArray], key: DecodeKey, deadline: Deadline | None
) -> Iterator[list[ChunkSegment]]:
    """Chunks one at a time, each prompted with the text of the one before it (after the
    client's own prompt), as whisper's condition_on_previous_text does between windows. As
    there, a chunk decoded at a temperature above 0.5 (likely garbage) passes nothing on."""
    previous = ""
    for piece in pieces:
        prompt = " ".join(p for p in (key.initial_prompt, previous) if p) or None
        [result] = runner.run([piece], replace(key, initial_prompt=prompt), deadline=deadline)
        yield result
        if result and max(s.temperature for s in result) > MAX_CONDITIONING_TEMPERATURE:
            previous = ""
        else:
            previous = " ".join(s.text.strip() for s in result)[-MAX_PROMPT_CHARS:]


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
