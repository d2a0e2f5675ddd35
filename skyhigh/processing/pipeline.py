"""process(event_id): claim an event, run its steps, record the outcome. One place for all steps."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from skyhigh.domain.events import ErrorCode, EventError, Match, Segment, StepFailed, Transcript
from skyhigh.domain.payloads import (
    DocumentDeletePayload,
    DocumentPayload,
    LookupOptions,
    QueryPayload,
    SpeechJob,
)
from skyhigh.knowledge.chunking import chunk_text
from skyhigh.knowledge.documents import document_rows, embed_chunks
from skyhigh.knowledge.writer import WriteOp
from skyhigh.live.publish import EventPublisher, FanOut
from skyhigh.observability.logs import event_id_var, request_id_var
from skyhigh.observability.metrics import EVENTS_COMPLETED, EVENTS_FAILED, STEP_SECONDS
from skyhigh.processing.services import Services
from skyhigh.store.events import EventStore

log = logging.getLogger("skyhigh.processing.pipeline")


@dataclass
class StepTimer:
    """Times named steps into the metrics, the log and the result's `timings`."""

    event_type: str
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.timings[f"{step}_s"] = round(elapsed, 4)
            STEP_SECONDS.labels(self.event_type, step).observe(elapsed)
            log.info(
                "step done",
                extra={
                    "event_type": self.event_type,
                    "step": step,
                    "duration_s": round(elapsed, 4),
                },
            )


Handler = Callable[[dict[str, Any], StepTimer], dict[str, Any]]


class Pipeline:
    """Runs events to a terminal state; safe to call from any worker thread or process."""

    def __init__(
        self, store: EventStore, services: Services, *, publisher: EventPublisher | None = None
    ) -> None:
        self.store = store
        self.services = services
        self.settings = services.settings
        self.publisher: EventPublisher = publisher or FanOut()
        self.handlers: dict[str, Handler] = {
            "query": self.run_query,
            "speech": self.run_speech,
            "document": self.run_document,
            "document_delete": self.run_document_delete,
        }

    def process(self, event_id: str) -> None:
        claimed = self.store.claim(event_id, max_attempts=self.settings.max_attempts)
        if claimed is None:
            return  # finished, claimed elsewhere, or out of attempts (failed by claim)
        event_token = event_id_var.set(event_id)
        request_token = request_id_var.set(claimed.request_id)
        timer = StepTimer(claimed.event_type)
        self.publisher.publish(
            event_id, {"type": "status", "status": "processing", "attempts": claimed.attempts}
        )
        try:
            log.info(
                "processing", extra={"event_type": claimed.event_type, "attempt": claimed.attempts}
            )
            handler = self.handlers.get(claimed.event_type)
            if handler is None:
                raise StepFailed(ErrorCode.INTERNAL_ERROR, f"no handler for {claimed.event_type!r}")
            result = handler(claimed.payload, timer)
        except StepFailed as failure:
            self._fail(event_id, claimed.event_type, failure.code, failure.message)
        except Exception:
            # Never let one event take the worker down; the traceback goes to the log only.
            log.exception("step crashed", extra={"event_type": claimed.event_type})
            self._fail(
                event_id,
                claimed.event_type,
                ErrorCode.INTERNAL_ERROR,
                "processing failed unexpectedly; the server log has the details",
            )
        else:
            self._complete(event_id, claimed.event_type, result)
        finally:
            self._discard_spooled_audio(claimed.payload)
            event_id_var.reset(event_token)
            request_id_var.reset(request_token)

    def _complete(self, event_id: str, event_type: str, result: dict[str, Any]) -> None:
        try:
            record = self.store.complete(event_id, result)
        except Exception:
            # The promise is completed-or-failed: a result that cannot be stored fails the event.
            log.exception("storing the result failed", extra={"event_type": event_type})
            self._fail(
                event_id,
                event_type,
                ErrorCode.INTERNAL_ERROR,
                "the result could not be stored; the server log has the details",
            )
            return
        self.publisher.publish(event_id, {"type": "status", **record.model_dump(mode="json")})
        EVENTS_COMPLETED.labels(event_type).inc()
        log.info("completed", extra={"event_type": event_type, "status": "completed"})

    def _fail(self, event_id: str, event_type: str, code: str, message: str) -> None:
        record = self.store.fail(event_id, EventError(code=code, message=message))
        self.publisher.publish(event_id, {"type": "status", **record.model_dump(mode="json")})
        EVENTS_FAILED.labels(event_type, code).inc()
        log.info("failed", extra={"event_type": event_type, "status": "failed", "code": code})

    # --- event types ---

    def run_query(self, payload: dict[str, Any], step: StepTimer) -> dict[str, Any]:
        query = QueryPayload.model_validate(payload)
        matches = self._lookup(query.text, self._embed(query.text, step), query, step)
        return {"matches": [m.model_dump(mode="json") for m in matches], "timings": step.timings}

    def run_document(self, payload: dict[str, Any], step: StepTimer) -> dict[str, Any]:
        document = DocumentPayload.model_validate(payload)
        assert document.document_id is not None  # intake fills it in
        table = document.table or self.settings.knowledge_table
        with step("chunk"):
            chunks = chunk_text(
                document.text, size=self.settings.chunk_size, overlap=self.settings.chunk_overlap
            )
        with step("embed"):
            vectors = embed_chunks(document, chunks, self.services.embedder)
        rows = document_rows(document, chunks, vectors)
        with step("write"):
            op = WriteOp(table, "documents", rows, replace_documents=[document.document_id])
            replaced = self.services.writer.submit(op).result()
        return {
            "document_id": document.document_id,
            "table": table,
            "chunks": len(rows),
            "replaced_chunks": replaced,
            "timings": step.timings,
        }

    def run_document_delete(self, payload: dict[str, Any], step: StepTimer) -> dict[str, Any]:
        delete = DocumentDeletePayload.model_validate(payload)
        table = delete.table or self.settings.knowledge_table
        self.services.knowledge.table(table)  # table_not_found before anything is queued
        with step("write"):
            op = WriteOp(table, "documents", [], replace_documents=[delete.document_id])
            deleted = self.services.writer.submit(op).result()
        return {"document_id": delete.document_id, "table": table, "deleted_chunks": deleted}

    def run_speech(self, payload: dict[str, Any], step: StepTimer) -> dict[str, Any]:
        from skyhigh.speech import audio
        from skyhigh.speech.transcriber import TranscribeOptions

        job = SpeechJob.model_validate(payload)
        pool = self.services.transcribers
        if pool is None:
            raise StepFailed(ErrorCode.INTERNAL_ERROR, "speech is disabled on this server")
        with step("decode"):
            path = self._audio_path(job)
            samples = audio.load_audio(path, max_seconds=self.settings.max_audio_seconds)
        options = TranscribeOptions(
            language=job.language,
            task=job.task,
            word_timestamps=job.word_timestamps,
            initial_prompt=job.initial_prompt,
        )
        event_id = event_id_var.get() or ""

        def on_segment(segment: Segment) -> None:
            self.publisher.publish(
                event_id, {"type": "segment", "segment": segment.model_dump(mode="json")}
            )

        with step("transcribe"), pool.borrow() as transcriber:
            transcript = transcriber.transcribe(samples, options, on_segment=on_segment)
        self.publisher.publish(
            event_id, {"type": "transcript", "transcript": transcript.model_dump(mode="json")}
        )
        matches: list[Match] = []
        text = transcript.text.strip()
        vector = self._embed(text, step) if text and (job.lookup or job.index_transcript) else None
        if job.index_transcript and vector is not None:
            self._index_transcript(event_id, transcript, vector, step)
        if job.lookup and vector is not None:
            matches = self._lookup(text, vector, job, step)
            self.publisher.publish(
                event_id,
                {"type": "matches", "matches": [m.model_dump(mode="json") for m in matches]},
            )
        return {
            "transcript": transcript.model_dump(mode="json"),
            "matches": [m.model_dump(mode="json") for m in matches],
            "timings": step.timings,
            "model": {"engine": pool.engine, "name": pool.model_name, "sha256": pool.sha256},
        }

    # --- steps ---

    def _embed(self, text: str, step: StepTimer) -> NDArray[np.float32]:
        with step("embed"):
            vector: NDArray[np.float32] = self.services.embedder.embed([text])[0]
        return vector

    def _lookup(
        self, text: str, vector: NDArray[np.float32], options: LookupOptions, step: StepTimer
    ) -> list[Match]:
        with step("lookup"):
            return self.services.knowledge.search(
                vector,
                text=text,
                table=options.table,
                k=options.k,
                filter=options.filter,
                mode=options.mode,
                min_score=options.min_score,
            )

    def _index_transcript(
        self, event_id: str, transcript: Transcript, vector: NDArray[np.float32], step: StepTimer
    ) -> None:
        row = {
            "id": event_id,
            "event_id": event_id,
            "title": f"Transcript of {event_id}",
            "text": transcript.text.strip(),
            "language": transcript.language,
            "created_at": datetime.now(UTC),
            "vector": vector.tolist(),
        }
        with step("index"):
            op = WriteOp(self.settings.transcripts_table, "transcripts", [row])
            self.services.writer.submit(op).result()

    def _audio_path(self, job: SpeechJob) -> Path:
        from skyhigh.speech import audio

        if job.audio_file is not None:
            path = self.settings.spool_dir / job.audio_file
            if not path.exists():
                raise StepFailed(ErrorCode.INTERNAL_ERROR, "spooled audio is missing")
            return path
        assert job.audio_url is not None  # SpeechJob always has one source
        return audio.fetch_audio_url(
            job.audio_url,
            self.settings.spool_dir / f"url-{event_id_var.get()}",
            allowed_hosts=self.settings.audio_url_allowed_hosts,
            allow_private=self.settings.audio_url_allow_private,
            max_bytes=self.settings.max_audio_bytes,
            timeout_s=self.settings.audio_url_timeout_s,
        )

    def _discard_spooled_audio(self, payload: dict[str, Any]) -> None:
        # Called once the event is terminal or requeued-by-crash is impossible: after
        # complete/fail the audio is never needed again. URL downloads are always discarded.
        event_id = event_id_var.get()
        if event_id:
            (self.settings.spool_dir / f"url-{event_id}").unlink(missing_ok=True)
        name = payload.get("audio_file")
        if isinstance(name, str):
            (self.settings.spool_dir / name).unlink(missing_ok=True)
