"""Turns in a live stream: where speech starts and stops, and which partial text is stable.

`StreamingVad` runs Silero (the model skyhigh.speech.vad uses) over each new 32 ms frame as
audio arrives, so the cost per append is the new audio only. Silero 5 as faster-whisper runs it
judges a frame from its 512 samples plus the 64 before them, so feeding the previous frame's
tail as context gives the same probabilities as one pass over the whole stream.

`StablePrefix` is the agreement policy of whisper_streaming and WhisperLive: a word is sent as a
delta only once two successive decodes of the open turn agree on it (and on all before it);
the completed text of the turn is its full decode, sent separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from skyhigh.speech import vad
from skyhigh.speech.samples import SAMPLE_RATE, FloatArray

FRAME: Final = 512  # Silero's window at 16 kHz (32 ms)
CONTEXT: Final = 64
# Below threshold minus this, a frame counts as silence (Silero's own hysteresis).
HYSTERESIS: Final = 0.15


@dataclass(frozen=True, kw_only=True)
class VadConfig:
    """OpenAI's `server_vad` knobs (its defaults: 0.5, 300 ms, 500 ms; ours below)."""

    # 0.3 as WHISPER_VAD_THRESHOLD: at 0.5 Silero missed "ask not" in JFK after a long pause.
    threshold: float = 0.3
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True)
class Boundary:
    """A speech start or stop, in samples since the session began (16 kHz)."""

    kind: Literal["start", "stop"]
    sample: int

    @property
    def ms(self) -> int:
        return self.sample * 1000 // SAMPLE_RATE


class StreamingVad:
    """Feed 16 kHz audio in pieces; get speech starts and stops as they become certain."""

    def __init__(self, config: VadConfig) -> None:
        from faster_whisper.vad import get_vad_model

        vad.warm_up()
        self._model = get_vad_model()
        self.config = config
        self._tail = np.zeros(0, dtype=np.float32)  # samples not yet a whole frame
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._position = 0  # samples judged so far
        self.speaking = False
        self._silence_from: int | None = None

    def feed(self, samples: FloatArray) -> list[Boundary]:
        joined = np.concatenate([self._tail, samples])
        whole = len(joined) // FRAME * FRAME
        self._tail = joined[whole:]
        if whole == 0:
            return []
        frames = joined[:whole]
        # One leading frame whose last 64 samples are the real context; its output is dropped.
        lead = np.zeros(FRAME, dtype=np.float32)
        lead[-CONTEXT:] = self._context
        probabilities = np.asarray(self._model(np.concatenate([lead, frames]))).reshape(-1)[1:]
        self._context = frames[-CONTEXT:].copy()
        boundaries: list[Boundary] = []
        for index, probability in enumerate(probabilities):
            found = self._judge(float(probability), self._position + index * FRAME)
            if found is not None:
                boundaries.append(found)
        self._position += whole
        return boundaries

    def _judge(self, probability: float, start: int) -> Boundary | None:
        config = self.config
        if not self.speaking:
            if probability >= config.threshold:
                self.speaking, self._silence_from = True, None
                return Boundary("start", start)
            return None
        if probability >= config.threshold:
            self._silence_from = None
        elif probability < config.threshold - HYSTERESIS and self._silence_from is None:
            self._silence_from = start
        silence = self._silence_from
        if silence is not None and start + FRAME - silence >= ms(config.silence_duration_ms):
            self.speaking, self._silence_from = False, None
            return Boundary("stop", silence)
        return None

    def reset(self) -> None:
        """After a clear: the next speech is a new turn (positions keep counting)."""
        self.speaking, self._silence_from = False, None


def ms(milliseconds: int) -> int:
    """Milliseconds as a number of 16 kHz samples."""
    return milliseconds * SAMPLE_RATE // 1000


class StablePrefix:
    """The words of an open turn that two successive decodes agree on, sent once each.

    `settled` words may go out after one decode: those that end well before the end of the
    decoded audio (word timestamps), which later audio rarely changes.
    """

    def __init__(self) -> None:
        self.sent: list[str] = []
        self._previous: list[str] = []

    def update(self, text: str | list[str], settled: int = 0) -> str:
        """The delta to send for this decode ("" when nothing new became stable)."""
        words = text.split() if isinstance(text, str) else text
        agreed = 0
        for old, new in zip(self._previous, words, strict=False):
            if old != new:
                break
            agreed += 1
        self._previous = words
        stable = words[: max(agreed, settled)]
        if len(stable) <= len(self.sent) or stable[: len(self.sent)] != self.sent:
            return ""  # nothing new, or the decode changed its mind about text already sent
        fresh = stable[len(self.sent) :]
        delta = (" " if self.sent else "") + " ".join(fresh)
        self.sent = stable
        return delta
