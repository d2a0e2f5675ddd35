"""The one way to load speech engines, and the pool that lends the loaded models.

Production (the lifespan, a Celery worker), tests and benchmarks all load through
`TranscriberPool.from_settings`: it resolves and verifies the weights once, loads
WHISPER_INSTANCES copies on a passing thread (skyhigh.speech.threads) and wires batching.

    pool = TranscriberPool.from_settings(settings)  # whisper_instances models
    with pool.borrow() as transcriber:              # blocks while all are busy
        transcript = transcriber.transcribe(audio, TranscribeOptions(language="en"))
    pool.transcribe(audio, TranscribeOptions())     # the same, borrowing for one clip

Importing this module loads no weights (nor torch), so the service loads them in its lifespan.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from skyhigh.config import SpeechSettings
from skyhigh.domain.events import Transcript
from skyhigh.speech import engines as _engines  # noqa: F401  importing it registers the engines
from skyhigh.speech import vad
from skyhigh.speech.batching import MicroBatcher
from skyhigh.speech.deadline import Deadline
from skyhigh.speech.engine_base import WhisperTranscriber
from skyhigh.speech.protocol import SegmentCallback, TranscribeOptions, Transcriber
from skyhigh.speech.registry import engine_class
from skyhigh.speech.samples import FloatArray
from skyhigh.speech.threads import keep_openmp_spinning, on_passing_thread
from skyhigh.speech.weights import ResolvedModel, resolve_whisper_model

log = logging.getLogger(__name__)


class TranscriberPool:
    """Loaded transcribers, each lent to one caller at a time (itself a `Transcriber`).

    With `batchers` (WHISPER_CROSS_REQUEST_BATCHING) every transcriber sends its chunks to its
    instance's MicroBatcher thread, so it is lent to any number of callers at once (the least
    busy instance first): concurrent clips then share batches instead of waiting their turn.
    """

    def __init__(
        self, transcribers: Sequence[Transcriber], *, batchers: Sequence[MicroBatcher] = ()
    ) -> None:
        if not transcribers:
            raise ValueError("a TranscriberPool needs at least one transcriber")
        first = transcribers[0]
        self.engine = first.engine
        self.model_name = first.model_name
        self.sha256 = first.sha256
        self.size = len(transcribers)
        self.batchers = list(batchers)
        self._idle: queue.Queue[Transcriber] = queue.Queue()
        for transcriber in transcribers:
            self._idle.put(transcriber)
        self._shared = {id(t): 0 for t in transcribers} if self.batchers else {}
        self._by_id = {id(t): t for t in transcribers}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: SpeechSettings) -> TranscriberPool:
        """Resolve the model once, then load settings.whisper_instances copies of it."""
        if settings.whisper_cross_request_batching and not settings.whisper_vad:
            raise ValueError(
                "WHISPER_CROSS_REQUEST_BATCHING batches speech chunks, which WHISPER_VAD=true "
                "makes: turn VAD on or cross-request batching off"
            )
        keep_openmp_spinning()  # before the engine imports torch or CTranslate2
        engine = engine_class(settings.whisper_engine)
        engine.configure_process(settings)

        def build() -> list[WhisperTranscriber]:
            resolved = _resolve(settings)  # may convert weights: torch work, so here too
            return [_load(engine, resolved, settings) for _ in range(settings.whisper_instances)]

        transcribers = on_passing_thread(build)
        if settings.whisper_vad:
            vad.warm_up()  # the Silero session, once per process, at startup
        if not settings.whisper_cross_request_batching:
            return cls(transcribers)
        batchers = []
        for transcriber in transcribers:
            batcher = MicroBatcher(
                transcriber.decoder,
                max_batch=settings.whisper_batch_size,
                max_wait_s=settings.whisper_batch_max_wait_ms / 1000,
            )
            transcriber.runner = batcher
            batchers.append(batcher)
        return cls(transcribers, batchers=batchers)

    def transcribe(
        self,
        audio: FloatArray,
        options: TranscribeOptions,
        *,
        on_segment: SegmentCallback | None = None,
        deadline: Deadline | None = None,
    ) -> Transcript:
        """Borrow a transcriber for one clip (waiting while all are busy) and transcribe it."""
        with self.borrow() as transcriber:
            return transcriber.transcribe(audio, options, on_segment=on_segment, deadline=deadline)

    @contextmanager
    def borrow(self, *, timeout: float | None = None) -> Iterator[Transcriber]:
        """Lend an idle transcriber; TimeoutError if none frees up within `timeout` seconds."""
        if self._shared:
            with self._shared_lease() as shared:
                yield shared
            return
        try:
            transcriber = self._idle.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no idle transcriber within {timeout}s") from None
        try:
            yield transcriber
        finally:
            self._idle.put(transcriber)

    @contextmanager
    def _shared_lease(self) -> Iterator[Transcriber]:
        with self._lock:
            chosen = min(self._shared, key=self._shared.__getitem__)
            self._shared[chosen] += 1
        try:
            yield self._by_id[chosen]
        finally:
            with self._lock:
                self._shared[chosen] -= 1

    def close(self) -> None:
        """Stop the batching threads (after what was submitted is decoded)."""
        for batcher in self.batchers:
            batcher.close()


def _resolve(settings: SpeechSettings) -> ResolvedModel:
    return resolve_whisper_model(
        settings.whisper_model, engine=settings.whisper_engine, cache_dir=settings.model_cache_dir
    )


def _load(
    engine: type[WhisperTranscriber], resolved: ResolvedModel, settings: SpeechSettings
) -> WhisperTranscriber:
    started = time.perf_counter()
    transcriber = engine.load(resolved, settings)
    log.info(
        "loaded %s %s (%s, sha256 %s) in %.2fs",
        transcriber.engine,
        resolved.name,
        resolved.source,
        transcriber.sha256[:12],
        time.perf_counter() - started,
    )
    return transcriber
