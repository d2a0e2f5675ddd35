"""How speech chunks reach the model: in the caller's batches, or batched across requests.

A `ChunkRunner` decodes a clip's chunks and yields each chunk's segments in order, so the caller
can report live segments as they come. Two runners:

- `LocalBatches`: the calling thread decodes its own clip, WHISPER_BATCH_SIZE chunks per model
  call. Each clip uses the model alone (TranscriberPool lends an instance to one caller).
- `MicroBatcher`: one decoding thread per model instance takes chunks from every clip waiting
  and decodes them together (WHISPER_CROSS_REQUEST_BATCHING). A batch starts with the oldest
  waiting chunk; it waits at most `max_wait_s` (counted from that chunk's arrival) for more
  chunks with the same decoding key, up to `max_batch`, taking them round-robin across clips so a
  long clip cannot hold a short one back. Each result goes back to its own clip and chunk, in
  order. Language detection goes through the same thread, ahead of decoding.

Both check the clip's deadline (skyhigh.speech.deadline) between decode steps: LocalBatches before
each batch, MicroBatcher while a clip waits for each chunk (its chunks not yet decoded are then
dropped). When a batch of several chunks fails in the engine, each of its chunks is decoded alone,
so an engine fault that only batching provokes costs time, not the event; a chunk that fails alone
fails its clip.

    batcher = MicroBatcher(decoder, max_batch=8, max_wait_s=0.03)
    for segments in batcher.run(audios, key):   # from any number of threads
        ...
    batcher.close()
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import Histogram

from skyhigh.speech.chunk_decoder import ChunkDecoder, ChunkSegment, DecodeKey
from skyhigh.speech.deadline import Deadline, TranscriptionTimeout, check, remaining
from skyhigh.speech.samples import FloatArray

log = logging.getLogger(__name__)

BATCH_CHUNKS = Histogram(
    "skyhigh_speech_batch_chunks",
    "Speech chunks per model call of the cross-request batcher.",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
)
BATCH_CLIPS = Histogram(
    "skyhigh_speech_batch_clips",
    "Clips whose chunks shared one model call of the cross-request batcher.",
    buckets=(1, 2, 3, 4, 6, 8, 16, 32),
)


class ChunkRunner(Protocol):
    def detect_language(self, audio: FloatArray) -> tuple[str, float]: ...

    def run(
        self, audios: Sequence[FloatArray], key: DecodeKey, *, deadline: Deadline | None = None
    ) -> Iterator[list[ChunkSegment]]:
        """Each chunk's segments, in the order of `audios`, as soon as they are decoded;
        TranscriptionTimeout once `deadline` passes between two decode steps."""


class LocalBatches:
    """Decode one clip's chunks on the calling thread, `batch_size` per model call."""

    def __init__(self, decoder: ChunkDecoder, *, batch_size: int) -> None:
        self._decoder = decoder
        self._batch_size = batch_size

    def detect_language(self, audio: FloatArray) -> tuple[str, float]:
        return self._decoder.detect_language(audio)

    def run(
        self, audios: Sequence[FloatArray], key: DecodeKey, *, deadline: Deadline | None = None
    ) -> Iterator[list[ChunkSegment]]:
        # The first chunk goes alone: a batch reports only when all its chunks are done, so its
        # segments reach live listeners while the rest decode in full batches.
        first, size = 0, 1
        while first < len(audios):
            check(deadline)
            yield from decode_batch(self._decoder, audios[first : first + size], key)
            first, size = first + size, self._batch_size


def decode_batch(
    decoder: ChunkDecoder, audios: Sequence[FloatArray], key: DecodeKey
) -> list[list[ChunkSegment]]:
    """`decoder.decode(audios, key)`; if the batch fails, each chunk decoded alone."""
    try:
        return decoder.decode(audios, key)
    except Exception:
        if len(audios) == 1:
            raise
        log.warning("decoding %d chunks together failed; each alone", len(audios), exc_info=True)
        return [decoder.decode([audio], key)[0] for audio in audios]


@dataclass
class _Chunk:
    clip: int
    audio: FloatArray
    key: DecodeKey
    arrived: float
    result: Future[list[ChunkSegment]] = field(default_factory=Future)


@dataclass
class _Detection:
    audio: FloatArray
    result: Future[tuple[str, float]] = field(default_factory=Future)


@dataclass(frozen=True)
class BatchStats:
    """What the decoding thread has done so far (for benchmarks and tests)."""

    batches: int
    chunks: int
    largest: int
    clips_together: int  # the most clips that ever shared one batch


class MicroBatcher:
    """Chunks from concurrent clips decoded together on one thread (see the module docstring)."""

    def __init__(self, decoder: ChunkDecoder, *, max_batch: int, max_wait_s: float) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._decoder = decoder
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._clip_ids = itertools.count()
        self._chunks: deque[_Chunk] = deque()
        self._detections: deque[_Detection] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._batches = self._decoded = self._largest = self._clips_together = 0
        self._thread = threading.Thread(target=self._loop, name="skyhigh-decoder", daemon=True)
        self._thread.start()

    def stats(self) -> BatchStats:
        with self._wake:
            return BatchStats(self._batches, self._decoded, self._largest, self._clips_together)

    def detect_language(self, audio: FloatArray) -> tuple[str, float]:
        job = _Detection(audio)
        with self._wake:
            self._check_open()
            self._detections.append(job)
            self._wake.notify()
        return job.result.result()

    def run(
        self, audios: Sequence[FloatArray], key: DecodeKey, *, deadline: Deadline | None = None
    ) -> Iterator[list[ChunkSegment]]:
        clip = next(self._clip_ids)
        now = time.monotonic()
        jobs = [_Chunk(clip, audio, key, now) for audio in audios]
        with self._wake:
            self._check_open()
            self._chunks.extend(jobs)
            self._wake.notify()
        try:
            for job in jobs:
                check(deadline)
                try:
                    result = job.result.result(timeout=remaining(deadline))
                except FutureTimeout:
                    raise TranscriptionTimeout("transcription deadline passed") from None
                yield result
        finally:  # a clip that stops early (deadline, error, caller gone) leaves nothing queued
            for job in jobs:
                job.result.cancel()

    def close(self) -> None:
        """Finish what was submitted, then stop the thread."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the decoder is shut down")

    # ------------------------------------------------------------------ the decoding thread

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not (self._chunks or self._detections or self._closed):
                    self._wake.wait()
                if self._detections:
                    detection = self._detections.popleft()
                    batch = None
                elif self._chunks:
                    batch = self._gather()
                else:  # closed and drained
                    return
            if batch is None:
                self._detect(detection)
            else:
                self._decode(batch)

    def _gather(self) -> list[_Chunk]:
        """Wait (lock held, released while waiting) for company, then take one batch."""
        key = self._chunks[0].key
        deadline = self._chunks[0].arrived + self._max_wait_s
        while not self._closed and not self._detections:
            if sum(1 for c in self._chunks if c.key == key) >= self._max_batch:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wake.wait(remaining)
        by_clip: dict[int, deque[_Chunk]] = {}
        for chunk in self._chunks:
            if chunk.key == key:
                by_clip.setdefault(chunk.clip, deque()).append(chunk)
        batch: list[_Chunk] = []
        while len(batch) < self._max_batch and by_clip:
            for clip in list(by_clip):  # round-robin: one chunk per clip per turn
                batch.append(by_clip[clip].popleft())
                if not by_clip[clip]:
                    del by_clip[clip]
                if len(batch) == self._max_batch:
                    break
        taken = {id(chunk) for chunk in batch}
        self._chunks = deque(c for c in self._chunks if id(c) not in taken)
        # A chunk its clip gave up on (cancelled) is dropped; the others can no longer be.
        batch = [c for c in batch if c.result.set_running_or_notify_cancel()]
        # Results go back per clip in chunk order; a clip's chunks keep their order in the batch.
        batch.sort(key=lambda c: (c.clip, c.arrived))
        return batch

    def _decode(self, batch: list[_Chunk]) -> None:
        if not batch:
            return
        try:
            results = self._decoder.decode([c.audio for c in batch], batch[0].key)
        except Exception as exc:  # the callers get it; the thread keeps serving
            if len(batch) == 1:
                log.exception("chunk decoding failed")
                batch[0].result.set_exception(exc)
                return
            log.warning("decoding %d chunks together failed; each alone", len(batch), exc_info=True)
            for chunk in batch:
                self._decode([chunk])
            return
        clips = len({c.clip for c in batch})
        BATCH_CHUNKS.observe(len(batch))
        BATCH_CLIPS.observe(clips)
        with self._wake:
            self._batches += 1
            self._decoded += len(batch)
            self._largest = max(self._largest, len(batch))
            self._clips_together = max(self._clips_together, clips)
        for chunk, segments in zip(batch, results, strict=True):
            chunk.result.set_result(segments)

    def _detect(self, job: _Detection) -> None:
        try:
            job.result.set_result(self._decoder.detect_language(job.audio))
        except Exception as exc:
            job.result.set_exception(exc)
