"""process(event_id): claim an event, run its steps, record the outcome. One place for all steps."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyhigh.events import ErrorCode, EventError, Match, StepFailed
from skyhigh.logs import event_id_var, request_id_var
from skyhigh.metrics import EVENTS_COMPLETED, EVENTS_FAILED, STEP_SECONDS
from skyhigh.payloads import LookupOptions, QueryPayload, SpeechJob
from skyhigh.services import Services
from skyhigh.store import EventStore

log = logging.getLogger("skyhigh.pipeline")


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

    def __init__(self, store: EventStore, services: Services) -> None:
        self.store = store
        self.services = services
        self.settings = services.settings
        self.handlers: dict[str, Handler] = {"query": self.run_query, "speech": self.run_speech}

    def process(self, event_id: str) -> None:
        claimed = self.store.claim(event_id, max_attempts=self.settings.max_attempts)
        if claimed is None:
            return  # finished, claimed elsewhere, or out of attempts (failed by claim)
        event_token = event_id_var.set(event_id)
        request_token = request_id_var.set(claimed.request_id)
        timer = StepTimer(claimed.event_type)
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
            self.store.complete(event_id, result)
            EVENTS_COMPLETED.labels(claimed.event_type).inc()
            log.info("completed", extra={"event_type": claimed.event_type, "status": "completed"})
        finally:
            self._discard_spooled_audio(claimed.payload)
            event_id_var.reset(event_token)
            request_id_var.reset(request_token)

    def _fail(self, event_id: str, event_type: str, code: str, message: str) -> None:
        self.store.fail(event_id, EventError(code=code, message=message))
        EVENTS_FAILED.labels(event_type, code).inc()
        log.info("failed", extra={"event_type": event_type, "status": "failed", "code": code})

    # --- event types ---

    def run_query(self, payload: dict[str, Any], step: StepTimer) -> dict[str, Any]:
        query = QueryPayload.model_validate(payload)
        matches = self._lookup(query.text, query, step)
        return {"matches": [m.model_dump() for m in matches], "timings": step.timings}

    def run_speech(self, payload: dict[str, Any], step: StepTimer) -> dict[str, Any]:
        from skyhigh import audio
        from skyhigh.transcriber import TranscribeOptions

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
        with step("transcribe"), pool.borrow() as transcriber:
            transcript = transcriber.transcribe(samples, options)
        matches: list[Match] = []
        if job.lookup and transcript.text.strip():
            matches = self._lookup(transcript.text, job, step)
        return {
            "transcript": transcript.model_dump(),
            "matches": [m.model_dump() for m in matches],
            "timings": step.timings,
            "model": {"engine": pool.engine, "name": pool.model_name, "sha256": pool.sha256},
        }

    # --- steps ---

    def _lookup(self, text: str, options: LookupOptions, step: StepTimer) -> list[Match]:
        with step("embed"):
            vector = self.services.embedder.embed([text])[0]
        with step("lookup"):
            return self.services.knowledge.search(
                vector, table=options.table, k=options.k, filter=options.filter
            )

    def _audio_path(self, job: SpeechJob) -> Path:
        from skyhigh import audio

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
