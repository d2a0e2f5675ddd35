"""What a transcriber is, and how a new speech engine plugs in.

A `Transcriber` turns 16 kHz mono float32 audio into a `Transcript`. The pipeline only ever sees
this protocol (through skyhigh.speech.pool.TranscriberPool, which is one itself), so any engine
that implements it can serve events.

To add an engine:

1. Write `skyhigh/speech/engines/<engine>.py` with a subclass of
   `skyhigh.speech.engine_base.WhisperTranscriber`: its `engine` name (the WHISPER_ENGINE value),
   a `load` classmethod that builds it from resolved weights and the settings, the engine's
   `ChunkDecoder` (batched decoding of speech chunks, see skyhigh.speech.chunk_decoder) and its
   `_transcribe_windows` (the library's own sequential transcription, used with WHISPER_VAD off).
2. Decorate the class with `@register_engine` (skyhigh.speech.registry) and import the module in
   `skyhigh/speech/engines/__init__.py`.
3. Add the name to `SpeechSettings.whisper_engine`, and the form of weights it loads (a
   CTranslate2 directory or an openai-whisper checkpoint) to skyhigh.speech.weights.ENGINE_WEIGHTS.

The base class then gives it VAD gating, language detection on speech, batching (local or across
requests), the deadline checks and transcript assembly, exactly as the other engines have them;
nothing else names engines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from skyhigh.domain.events import Segment, Transcript
from skyhigh.speech.deadline import Deadline
from skyhigh.speech.samples import FloatArray

SegmentCallback = Callable[[Segment], None]


@dataclass(frozen=True, kw_only=True)
class TranscribeOptions:
    """Per-clip choices; model-wide decoding settings come from SpeechSettings."""

    language: str | None = None
    task: Literal["transcribe", "translate"] = "transcribe"
    word_timestamps: bool = False
    initial_prompt: str | None = None
    # Beam width for this clip; None: the engine's (WHISPER_BEAM_SIZE or its default). Realtime
    # decodes partial text greedily and each turn's final with a wider beam, on one model.
    beam_size: int | None = None


class Transcriber(Protocol):
    """Loaded weights that transcribe (an engine instance, or a pool of them).

    `transcribe` blocks (call it from a worker thread). It reports each segment to `on_segment`
    as soon as it is decoded, in order, and raises skyhigh.speech.deadline.TranscriptionTimeout
    when `deadline` passes between two decode steps.
    """

    @property
    def engine(self) -> str:
        """The WHISPER_ENGINE name the engine is registered under."""

    @property
    def model_name(self) -> str: ...

    @property
    def sha256(self) -> str:
        """Of the weights file the engine loaded."""

    def transcribe(
        self,
        audio: FloatArray,
        options: TranscribeOptions,
        *,
        on_segment: SegmentCallback | None = None,
        deadline: Deadline | None = None,
    ) -> Transcript: ...
