"""What every engine's transcriber shares: VAD gating, the language, the deadline, assembly.

An engine (skyhigh.speech.engines) subclasses `WhisperTranscriber` and supplies only what is its
own: loading, a `ChunkDecoder` (batched decoding of speech chunks) and `_transcribe_windows` (the
library's sequential transcription, used with WHISPER_VAD off). See skyhigh.speech.protocol.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Self

from skyhigh.config import SpeechSettings
from skyhigh.domain.events import Segment, Transcript
from skyhigh.speech.assembly import language_of, segment_from, transcript_of
from skyhigh.speech.batching import ChunkRunner, LocalBatches
from skyhigh.speech.chunk_decoder import ChunkDecoder
from skyhigh.speech.deadline import Deadline, check
from skyhigh.speech.decoding import DecodingSettings
from skyhigh.speech.protocol import SegmentCallback, TranscribeOptions
from skyhigh.speech.samples import FloatArray
from skyhigh.speech.speech_only import transcribe_speech
from skyhigh.speech.weights import ResolvedModel

# Takes one raw segment (a mapping of either library's fields) as soon as it is decoded.
RawSegmentSink = Callable[[Mapping[str, Any]], None]


class WhisperTranscriber(ABC):
    """One loaded Whisper model on one engine (a `Transcriber`)."""

    engine: ClassVar[str]  # the WHISPER_ENGINE name the engine is registered under

    model_name: str
    sha256: str
    decoder: ChunkDecoder
    runner: ChunkRunner  # LocalBatches; the pool swaps in a MicroBatcher to batch across requests

    def __init__(
        self, *, model_name: str, sha256: str, decoder: ChunkDecoder, decoding: DecodingSettings
    ) -> None:
        self.model_name = model_name
        self.sha256 = sha256
        self.decoder = decoder
        self.runner = LocalBatches(decoder, batch_size=decoding.batch_size)
        self._decoding = decoding

    @classmethod
    @abstractmethod
    def load(cls, resolved: ResolvedModel, settings: SpeechSettings) -> Self:
        """Load the weights for `settings` (blocking, heavy: once per process and instance)."""

    @classmethod  # noqa: B027  an optional hook: most engines need nothing
    def configure_process(cls, settings: SpeechSettings) -> None:
        """Process-wide knobs the engine needs set before any model loads (none by default)."""

    def transcribe(
        self,
        audio: FloatArray,
        options: TranscribeOptions,
        *,
        on_segment: SegmentCallback | None = None,
        deadline: Deadline | None = None,
    ) -> Transcript:
        check(deadline)
        if self._decoding.vad is not None:
            return transcribe_speech(
                audio,
                options,
                runner=self.runner,
                vad=self._decoding.vad,
                multilingual=self.decoder.multilingual,
                on_segment=on_segment,
                deadline=deadline,
                condition=self._decoding.condition_on_previous_text,
                loop_guard=self._decoding.loop_guard,
            )
        language, probability = language_of(
            options.language,
            audio,
            multilingual=self.decoder.multilingual,
            detect=self.runner.detect_language,
        )
        segments: list[Segment] = []

        def emit(raw: Mapping[str, Any]) -> None:
            segments.append(segment_from(len(segments), raw))
            if on_segment is not None:
                on_segment(segments[-1])

        check(deadline)
        self._transcribe_windows(audio, options, language, emit, deadline)
        return transcript_of(segments, language=language, probability=probability, audio=audio)

    @abstractmethod
    def _transcribe_windows(
        self,
        audio: FloatArray,
        options: TranscribeOptions,
        language: str,
        emit: RawSegmentSink,
        deadline: Deadline | None,
    ) -> None:
        """The library's own sequential transcription over 30-second windows: `emit` each
        segment once decoded, and `check(deadline)` between windows."""
