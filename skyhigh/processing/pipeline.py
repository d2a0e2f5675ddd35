"""process(key): claim an event, run its type's handler, record the outcome.

Everything around a handler lives here once: the claim (attempts counted, MAX_ATTEMPTS
enforced), the `processing` announcement, log context, the outcome (an event always reaches
`completed` or `failed`, even when storing its result fails) and the spooled audio's cleanup.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

from skyhigh.domain.errors import Interrupted
from skyhigh.domain.events import ErrorCode, EventError, StepFailed
from skyhigh.live.publish import EventPublisher, FanOut
from skyhigh.observability.logs import event_id_var, request_id_var
from skyhigh.observability.metrics import EVENTS_COMPLETED, EVENTS_FAILED
from skyhigh.processing.handlers import Job, StepTimer, url_download_path
from skyhigh.processing.leases import LeaseKeeper
from skyhigh.processing.registry import EVENT_TYPES
from skyhigh.processing.services import Services
from skyhigh.store.events import ClaimedEvent, EventStore

log = logging.getLogger("skyhigh.processing.pipeline")


class Pipeline:
    """Runs events to a terminal state; safe to call from any worker thread or process."""

    def __init__(
        self,
        store: EventStore,
        services: Services,
        *,
        leases: LeaseKeeper,
        publisher: EventPublisher | None = None,
        on_audio: Callable[[str, float, dict[str, float] | None], None] | None = None,
    ) -> None:
        self.store = store
        self.services = services
        self.settings = services.settings
        self.leases = leases
        self.publisher: EventPublisher = publisher or FanOut()
        # Told (owner, decoded seconds, the intake hold) for each ended speech event, completed
        # or failed: audio quotas (skyhigh.intake.quotas).
        self.on_audio = on_audio

    def process(self, key: str) -> None:
        claimed = self.store.claim(
            key,
            max_attempts=self.settings.max_attempts,
            owner=self.leases.owner,
            lease_s=self.leases.lease_s,
        )
        self._run_held(claimed)  # None: finished, leased elsewhere, or out of attempts

    def process_next(self, hint: str, *, peers: Callable[[str], Collection[str]]) -> None:
        """Scale mode: `hint` only wakes this worker, which runs the next event in fair order
        (skyhigh.store.event_leases.claim_next) among `peers(type of the hinted event)`, the
        types its queue carries: the hinted event, or another owner's that waited longer."""
        event_type = self.store.event_type_of(hint)
        if event_type is None:
            return
        self._run_held(
            self.store.claim_next(
                peers(event_type),
                max_attempts=self.settings.max_attempts,
                owner=self.leases.owner,
                lease_s=self.leases.lease_s,
            )
        )

    def _run_held(self, claimed: ClaimedEvent | None) -> None:
        if claimed is None:
            return
        with self.leases.hold(claimed.key):
            self._run(claimed)

    def _run(self, claimed: ClaimedEvent) -> None:
        key = claimed.key
        event_token = event_id_var.set(key)
        request_token = request_id_var.set(claimed.request_id)
        job = Job(key, self.services, self.settings, self.publisher, StepTimer(claimed.event_type))
        self.publisher.publish(
            key, {"type": "status", "status": "processing", "attempts": claimed.attempts}
        )
        try:
            log.info(
                "processing", extra={"event_type": claimed.event_type, "attempt": claimed.attempts}
            )
            event_type = EVENT_TYPES.get(claimed.event_type)
            if event_type is None:
                raise StepFailed(ErrorCode.INTERNAL_ERROR, f"no handler for {claimed.event_type!r}")
            result = event_type.handler(claimed.payload, job)
        except StepFailed as failure:
            concluded = self._fail(key, claimed.event_type, failure.code, failure.message)
        except Interrupted as interrupted:
            # A shutdown stopped a child process: back to the queue, the attempt counted.
            log.warning("put back: %s", interrupted, extra={"event_type": claimed.event_type})
            self.store.requeue(key, owner=self.leases.owner)
            concluded = False
        except Exception:
            # Never let one event take the worker down; the traceback goes to the log only.
            log.exception("step crashed", extra={"event_type": claimed.event_type})
            concluded = self._fail(
                key,
                claimed.event_type,
                ErrorCode.INTERNAL_ERROR,
                "processing failed unexpectedly; the server log has the details",
            )
        else:
            concluded = self._complete(key, claimed.event_type, result)
        finally:
            event_id_var.reset(event_token)
            request_id_var.reset(request_token)
        if concluded:  # else the event's new lease holder still needs the audio
            self._count_audio(claimed, job)
            self._discard_spooled_audio(key, claimed.payload)

    def _complete(self, key: str, event_type: str, result: dict[str, Any]) -> bool:
        try:
            record = self.store.complete(key, result, owner=self.leases.owner)
        except Exception:
            # The promise is completed-or-failed: a result that cannot be stored fails the event.
            log.exception("storing the result failed", extra={"event_type": event_type})
            return self._fail(
                key,
                event_type,
                ErrorCode.INTERNAL_ERROR,
                "the result could not be stored; the server log has the details",
            )
        if record is None:
            log.warning("lease lost before completion", extra={"event_type": event_type})
            return False
        self.publisher.publish(key, {"type": "status", **record.model_dump(mode="json")})
        EVENTS_COMPLETED.labels(event_type).inc()
        log.info("completed", extra={"event_type": event_type, "status": "completed"})
        return True

    def _fail(self, key: str, event_type: str, code: str, message: str) -> bool:
        error = EventError(code=code, message=message)
        record = self.store.fail(key, error, owner=self.leases.owner)
        if record is None:
            log.warning("lease lost before failing", extra={"event_type": event_type})
            return False
        self.publisher.publish(key, {"type": "status", **record.model_dump(mode="json")})
        EVENTS_FAILED.labels(event_type, code).inc()
        log.info("failed", extra={"event_type": event_type, "status": "failed", "code": code})
        return True

    def _count_audio(self, claimed: ClaimedEvent, job: Job) -> None:
        if self.on_audio is None or claimed.event_type != "speech":
            return
        if claimed.payload.get("audio_charged") is True:  # charged as it streamed (realtime)
            return
        hold = claimed.payload.get("audio_hold")
        self.on_audio(
            claimed.owner, job.usage.get("audio_s", 0.0), hold if isinstance(hold, dict) else None
        )

    def _discard_spooled_audio(self, key: str, payload: dict[str, Any]) -> None:
        # Called once the event is terminal: its audio is never needed again.
        spool_dir = self.settings.spool_dir
        url_download_path(spool_dir, key).unlink(missing_ok=True)
        name = payload.get("audio_file")
        if isinstance(name, str):
            (spool_dir / name).unlink(missing_ok=True)
