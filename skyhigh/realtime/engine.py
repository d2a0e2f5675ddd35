"""The realtime model: a small Whisper loaded once, decoding turns off the event loop.

Loaded by the lifespan only with REALTIME_ENABLED (REALTIME_ENGINE, REALTIME_MODEL; tiny.en on
faster-whisper int8 by default: a base decode of a few seconds costs about a second here,
because the encoder always sees a 30 s window). Decodes run one at a time on worker threads
(the model is one instance, and on two cores a second decode would only slow the first).
Partial decodes are greedy, because they set how soon a delta goes out; each turn's final
decode uses REALTIME_FINAL_BEAM_SIZE (BENCHMARKS.md "Live").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import anyio

from skyhigh.config import Settings
from skyhigh.domain.events import Transcript
from skyhigh.speech.protocol import TranscribeOptions
from skyhigh.speech.samples import FloatArray

if TYPE_CHECKING:
    from skyhigh.speech.pool import TranscriberPool


class TimedWord(NamedTuple):
    word: str
    end: float  # seconds from the start of the decoded audio


class RealtimeEngine:
    def __init__(self, pool: TranscriberPool, *, final_beam_size: int = 5) -> None:
        self.pool = pool
        self.final_beam_size = final_beam_size
        self.model_name = pool.model_name
        self._limiter: anyio.CapacityLimiter | None = None

    @classmethod
    def load(cls, settings: Settings) -> RealtimeEngine:
        """Blocking: call from a thread at startup."""
        # Imported here: an API that serves no realtime never loads the engines for it.
        from skyhigh.speech.pool import TranscriberPool

        realtime = settings.realtime
        speech = settings.speech.model_copy(
            update={
                "whisper_engine": realtime.realtime_engine,
                "whisper_model": realtime.realtime_model,
                "whisper_instances": 1,
                # A turn is speech already (the session's VAD found it): decode it whole.
                "whisper_vad": False,
                "whisper_cross_request_batching": False,
            }
        )
        pool = TranscriberPool.from_settings(speech)
        return cls(pool, final_beam_size=realtime.realtime_final_beam_size)

    async def decode(self, audio: FloatArray, *, language: str | None, prompt: str | None) -> str:
        options = TranscribeOptions(
            language=language, initial_prompt=prompt, beam_size=self.final_beam_size
        )
        transcript = await self._transcribe(audio, options)
        return transcript.text.strip()

    async def decode_words(
        self, audio: FloatArray, *, language: str | None, prompt: str | None
    ) -> list[TimedWord]:
        """The words of the audio with the second each ends at (word timestamps)."""
        options = TranscribeOptions(
            language=language, initial_prompt=prompt, word_timestamps=True, beam_size=1
        )
        transcript = await self._transcribe(audio, options)
        return [
            TimedWord(word.word.strip(), word.end)
            for segment in transcript.segments
            for word in segment.words or ()
            if word.word.strip()
        ]

    async def _transcribe(self, audio: FloatArray, options: TranscribeOptions) -> Transcript:
        if self._limiter is None:  # made on the event loop that uses it
            self._limiter = anyio.CapacityLimiter(1)
        return await anyio.to_thread.run_sync(
            lambda: self.pool.transcribe(audio, options), limiter=self._limiter
        )

    def close(self) -> None:
        self.pool.close()
