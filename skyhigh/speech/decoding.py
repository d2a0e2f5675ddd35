"""The decoding settings both engines share, so that they behave alike.

Greedy or beam search at temperature 0 (WHISPER_BEAM_SIZE, or the engine's default); whisper's
temperature fallback when a result looks like a repetition loop or is improbable; whisper's
no-speech gate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from skyhigh.config import SpeechSettings
from skyhigh.speech.vad import VadOptions

# Both engines' default fallback: retry at rising temperature when greedy output looks like a
# repetition loop (compression ratio) or is improbable (avg logprob).
TEMPERATURES: Final = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
COMPRESSION_RATIO_THRESHOLD: Final = 2.4
BEST_OF: Final = 5


@dataclass(frozen=True, kw_only=True)
class GatePolicy:
    """The decoding thresholds (WHISPER_* settings) the fallback and the gate apply."""

    beam_size: int = 1
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    temperatures: tuple[float, ...] = TEMPERATURES  # (0.0,): no fallback


@dataclass(frozen=True, kw_only=True)
class DecodingSettings:
    """The model-wide decoding knobs, shared by both engines so they behave alike."""

    beam_size: int = 5
    # Sequential path: whisper's own conditioning. VAD path: each chunk is prompted with the
    # text of the chunk before it (decoded one at a time, not in batches).
    condition_on_previous_text: bool = False
    temperature_fallback: bool = True
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    vad: VadOptions | None = VadOptions()  # None: the libraries' sequential transcribe
    # The repetition-loop guard's minimum silence (skyhigh.speech.loop_guard); None: no guard.
    loop_guard_min_silence_ms: int | None = 500
    batch_size: int = 4  # speech chunks per model call

    @classmethod
    def from_settings(cls, settings: SpeechSettings) -> DecodingSettings:
        return cls(
            beam_size=settings.beam_size,
            condition_on_previous_text=settings.whisper_condition_on_previous_text,
            temperature_fallback=settings.whisper_temperature_fallback,
            no_speech_threshold=settings.whisper_no_speech_threshold,
            logprob_threshold=settings.whisper_logprob_threshold,
            vad=VadOptions.from_settings(settings) if settings.whisper_vad else None,
            loop_guard_min_silence_ms=(
                settings.whisper_loop_guard_min_silence_ms if settings.whisper_loop_guard else None
            ),
            batch_size=settings.whisper_batch_size,
        )

    @property
    def temperatures(self) -> tuple[float, ...]:
        return TEMPERATURES if self.temperature_fallback else TEMPERATURES[:1]

    @property
    def loop_guard(self) -> VadOptions | None:
        """The VAD a looping chunk is split with again: the service's, with shorter pauses."""
        if self.vad is None or self.loop_guard_min_silence_ms is None:
            return None
        return replace(self.vad, min_silence_ms=self.loop_guard_min_silence_ms)

    @property
    def policy(self) -> GatePolicy:
        return GatePolicy(
            beam_size=self.beam_size,
            no_speech_threshold=self.no_speech_threshold,
            logprob_threshold=self.logprob_threshold,
            temperatures=self.temperatures,
        )
