"""Turns in a live stream: where speech starts and stops, and which partial text is stable.

`StreamingVad` runs Silero (the model skyhigh.speech.vad uses) over each new 32 ms frame as
audio arrives, so the cost per append is the new audio only. Silero judges a frame from its 512
samples, the 64 before them, and its recurrent state (h, c) after the frames before: within one
call faster-whisper's wrapper carries that state from frame to frame, but every call starts from
zeros. `SileroStream` keeps both the context and the state across appends, so a stream gets the
probabilities of one pass over the whole recording. Calling the wrapper per append instead (what
was here before) forgot the state every 100 ms: the VAD then heard "pauses" inside words, cut
turns there and clipped the words at the cut (BENCHMARKS.md "Live").

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


class SileroStream:
    """Silero speech probabilities of whole 512-sample frames, fed in pieces: each frame gets the
    64 samples before it and the recurrent state after all earlier frames, as in one pass."""

    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model

        vad.warm_up()
        self._session = get_vad_model().session
        self._context = np.zeros(CONTEXT, dtype=np.float32)  # the first frame's: silence
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)

    def __call__(self, frames: FloatArray) -> FloatArray:
        rows = frames.reshape(-1, FRAME)
        contexts = np.concatenate([self._context[None, :], rows[:-1, -CONTEXT:]])
        batch = np.concatenate([contexts, rows], axis=1).astype(np.float32)
        output, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        self._context = rows[-1, -CONTEXT:].copy()
        return np.asarray(output, dtype=np.float32).reshape(-1)


class StreamingVad:
    """Feed 16 kHz audio in pieces; get speech starts and stops as they become certain."""

    def __init__(self, config: VadConfig) -> None:
        self._silero = SileroStream()
        self.config = config
        self._tail = np.zeros(0, dtype=np.float32)  # samples not yet a whole frame
        self._position = 0  # samples judged so far
        self.speaking = False
        self._silence_from: int | None = None

    def feed(self, samples: FloatArray) -> list[Boundary]:
        joined = np.concatenate([self._tail, samples])
        whole = len(joined) // FRAME * FRAME
        self._tail = joined[whole:]
        if whole == 0:
            return []
        probabilities = self._silero(joined[:whole])
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

    @property
    def pausing(self) -> bool:
        """In a turn, and the latest frames are silence: a stop may follow within the silence
        duration (a partial decode started now would make that turn's final wait for it)."""
        return self.speaking and self._silence_from is not None

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
