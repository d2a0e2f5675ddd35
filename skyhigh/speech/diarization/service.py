"""Diarization as a worker runs it: the speaker model loaded once, transcripts labelled.

    model = SpeakerModel(settings.speech)          # cheap: nothing loads yet
    labelled = diarize_transcript(model.get(), samples, transcript, hints=..., known=...)
    # labelled.segments[i].speaker, labelled.segments[i].words[j].speaker, labelled.speakers

The speaker encoder loads on the first event that asks for diarization (then stays), so a
process that never diarizes (an API process, a worker with no such events) never pays for it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from typing import Final

from skyhigh.config import SpeechSettings
from skyhigh.domain.events import Segment, SpeakerTalk, Transcript, Word
from skyhigh.speech.diarization.assign import SpeakerSegment, assign_speakers, talk_time
from skyhigh.speech.diarization.clustering import SpeakerHints
from skyhigh.speech.diarization.pipeline import Diarizer, KnownSpeaker, Turn
from skyhigh.speech.samples import SAMPLE_RATE, FloatArray
from skyhigh.speech.vad import VadOptions, speech_spans

# Tighter than transcription's VAD: diarization would score the padding as speech of
# whoever spoke next to it (measured on tests/conversations.py; BENCHMARKS.md "Speech").
# The threshold is diarization's own, as calibrated: transcription's WHISPER_VAD_THRESHOLD
# moved to 0.5, which on the 10-minute benchmark recording found a third speaker (DER 0.0069
# -> 0.033; BENCHMARKS.md "Speech: diarization").
DIARIZATION_VAD: Final = VadOptions(threshold=0.3, speech_pad_ms=100, min_silence_ms=300)
# Audio handed to the VAD at once, and the gap at a block seam under which two regions join.
VAD_BLOCK_S: Final = 120.0
SEAM_GAP: Final = int(DIARIZATION_VAD.min_silence_ms / 1000 * SAMPLE_RATE)


class SpeakerModel:
    """A process's diarizer, built on first use and then shared (thread-safe)."""

    def __init__(self, settings: SpeechSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._diarizer: Diarizer | None = None

    @property
    def loaded(self) -> bool:
        return self._diarizer is not None

    def get(self) -> Diarizer:
        with self._lock:
            if self._diarizer is None:
                self._diarizer = load_diarizer(self._settings)
            return self._diarizer


def load_diarizer(settings: SpeechSettings) -> Diarizer:
    """The configured encoder (DIARIZATION_BACKEND): the ONNX export, made once if missing."""
    if settings.diarization_backend == "torch":
        from skyhigh.speech.diarization.encoder import TorchSpeakerEncoder

        return Diarizer(TorchSpeakerEncoder())
    from skyhigh.speech.diarization.onnx_model import OnnxSpeakerEncoder, ensure_speaker_onnx

    model = ensure_speaker_onnx(cache_dir=settings.model_cache_dir)
    return Diarizer(OnnxSpeakerEncoder(model, threads=settings.diarization_threads))


def speech_regions(samples: FloatArray) -> list[tuple[float, float]]:
    """Speech regions (seconds), found block by block: Silero over a whole long clip at once
    holds several copies of it (BENCHMARKS.md "Speech: diarization"). Regions that meet at a
    block seam are joined again."""
    block = int(VAD_BLOCK_S * SAMPLE_RATE)
    regions: list[list[int]] = []
    for offset in range(0, len(samples), block):
        piece = samples[offset : offset + block]
        if len(piece) < SAMPLE_RATE // 10:  # a sliver at the end: too short to judge
            continue
        for index, (start, end) in enumerate(speech_spans(piece, DIARIZATION_VAD)):
            start, end = start + offset, end + offset
            at_seam = index == 0 and start - offset <= SEAM_GAP
            if at_seam and regions and offset - regions[-1][1] <= SEAM_GAP:
                regions[-1][1] = end
            else:
                regions.append([start, end])
    return [(start / SAMPLE_RATE, end / SAMPLE_RATE) for start, end in regions]


def diarize_transcript(
    diarizer: Diarizer,
    samples: FloatArray,
    transcript: Transcript,
    *,
    hints: SpeakerHints | None = None,
    known: Sequence[KnownSpeaker] = (),
) -> Transcript:
    """The transcript with a speaker on every segment and word (segments split at changes)."""
    regions = speech_regions(samples)
    turns = diarizer.diarize(samples, regions, hints=hints, known_speakers=known) if regions else []
    return label_transcript(transcript, turns, known_names={k.name for k in known})


def label_transcript(
    transcript: Transcript, turns: Sequence[Turn], *, known_names: set[str]
) -> Transcript:
    pieces = assign_speakers(transcript.segments, turns)
    segments = _segments(transcript.segments, pieces)
    speakers = [
        SpeakerTalk(speaker=name, talk_time_s=seconds, known=name in known_names)
        for name, seconds in talk_time(turns).items()
    ]
    return transcript.model_copy(update={"segments": segments, "speakers": speakers})


def _segments(sources: Sequence[Segment], pieces: Sequence[SpeakerSegment]) -> list[Segment]:
    """Engine segments rebuilt from their speaker pieces, renumbered; a piece of a split segment
    keeps its source's scores but not its tokens (they belong to the whole segment)."""
    out: list[Segment] = []
    used_words: dict[int, int] = {}  # source index -> its words already handed out
    per_source = Counter(piece.source for piece in pieces)
    for piece in pieces:
        source = sources[piece.source]
        words = None
        if source.words is not None:
            first = used_words.get(piece.source, 0)
            originals = source.words[first : first + len(piece.words)]
            used_words[piece.source] = first + len(piece.words)
            words = [
                Word.model_validate({**word.model_dump(), "speaker": labelled.speaker})
                for word, labelled in zip(originals, piece.words, strict=True)
            ]
        whole = per_source[piece.source] == 1
        out.append(
            source.model_copy(
                update={
                    "id": len(out),
                    "start": piece.start,
                    "end": piece.end,
                    "text": source.text if whole else " " + piece.text,
                    "speaker": piece.speaker,
                    "words": words,
                    "tokens": source.tokens if whole else None,
                    "seek": source.seek,
                }
            )
        )
    return out
