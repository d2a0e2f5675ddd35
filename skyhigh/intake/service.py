"""Intake: the one path from a validated request to a stored, dispatched event.

Every route that creates events (`POST /events/`, `/events/upload`, and any later face such as
an OpenAI-compatible one) calls `Intake.accept` once. The order matters and lives only here:

0. authorize: the principal's scopes for this event (skyhigh.intake.permissions), and a
   document's metadata against the table's column cap; map (principal, event_id) to the
   stored key (skyhigh.domain.tenancy): from here on, intake uses only the key;
1. check the URLs the client chose (`audio_url`, `callback_url`) without DNS;
2. reserve room in the queue (MAX_PENDING_EVENTS) and in the principal's share of it
   (MAX_PENDING_PER_PRINCIPAL, skyhigh.intake.admission), given back on every exit unless the
   event was dispatched;
3. answer a replay (same event_id, same body) before spooling its audio again, and even when
   the queue is full; a different body under a used id is an `EventConflict`;
4. spool audio durably, reserve its seconds against the audio quota (skyhigh.intake.quotas,
   given back unless the event is stored; none for audio charged already), then store the
   event (group commit): the 202 goes out only once both are on disk, because it promises the
   event will reach `completed` or `failed`;
5. announce `queued` before dispatching, so no subscriber sees `processing` first;
6. record webhook targets (also on replays: an intake that died between storing and
   scheduling is completed by the client's retry).

Failures are domain exceptions (`Forbidden`, `InvalidInput`, `QueueFull`, `EventConflict`);
the web layer maps them to HTTP in one place.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import anyio
from pydantic import BaseModel

from skyhigh.config import IntakeSettings
from skyhigh.domain.errors import EventConflict, InvalidInput, QueueFull
from skyhigh.domain.events import EventRecord, StepFailed
from skyhigh.domain.payloads import SpeechOptions, SpeechPayload
from skyhigh.domain.tenancy import Principal, event_key, reader_fields
from skyhigh.intake.admission import PrincipalAdmission, Ticket
from skyhigh.intake.batcher import IntakeBatcher
from skyhigh.intake.permissions import KnowledgeGuard, authorize
from skyhigh.intake.quotas import AudioHold, Quotas
from skyhigh.intake.spool import (
    body_sha256,
    copy_upload,
    new_spool_name,
    spool_speech,
    stored_form,
)
from skyhigh.live.publish import EventPublisher
from skyhigh.observability.logs import request_id_var
from skyhigh.observability.metrics import EVENTS_ACCEPTED
from skyhigh.processing.dispatch import Dispatcher
from skyhigh.processing.registry import carries_audio
from skyhigh.speech.audio_url import check_audio_url
from skyhigh.store.events import EventStore, NewEvent
from skyhigh.webhooks.sender import Webhooks, check_callback_url


@dataclass(frozen=True)
class Submission:
    """One request to accept, whichever route it came through.

    `principal` is who sends it; `event_id` the client's id, unique within that principal.
    `payload` is the validated `event_data`. `upload` is audio sent as a file (multipart),
    spooled and hashed by intake; its hash stands in for the bytes in the body hash. `fields`
    is where the payload's fields sit in the request, for error locations. `audio_charged`:
    the audio was counted against the principal's quota already (a realtime session charges as
    it streams), so intake neither checks nor reserves it and the worker does not charge it.
    """

    principal: Principal
    event_id: str
    event_type: str
    payload: BaseModel
    upload: BinaryIO | None = None
    fields: tuple[str, ...] = ("body", "event_data")
    audio_charged: bool = False

    @property
    def key(self) -> str:
        """The stored key: the principal's namespace plus the event id."""
        key = event_key(self.principal.owner, self.event_id)
        # Routes validate event ids (and Idempotency-Keys) with the same pattern.
        assert key is not None, "event ids are validated before intake"
        return key

    @property
    def callback_url(self) -> str | None:
        value: str | None = getattr(self.payload, "callback_url", None)
        return value


class _Reservation:
    def __init__(self, dispatcher: Dispatcher, ticket: Ticket) -> None:
        self._dispatcher = dispatcher
        # The principal's share first: a refused principal takes no room in the queue.
        self.refusal = ticket.refusal
        self.held = self.refusal is None and dispatcher.reserve()
        self.dispatched = False

    def dispatch(self, key: str, *, event_type: str) -> None:
        """The reservation becomes the dispatched event's place in the queue."""
        self._dispatcher.submit(key, event_type=event_type)
        self.held = False
        self.dispatched = True


@dataclass(frozen=True)
class _Spooled:
    stored: dict[str, Any]
    path: Path | None
    audio_sha256: str | None


class Intake:
    """Accepts events: see the module docstring for the steps.

    Usage (on the event loop)::

        intake = Intake(store, batcher, dispatcher, publisher, webhooks,
                        settings.intake, spool_dir=settings.spool_dir,
                        knowledge=KnowledgeGuard(kb, settings.knowledge), quotas=quotas)
        principal = Principal.static()
        submission = Submission(principal, "e1", "query", QueryPayload(text="bags"))
        record = await intake.accept(submission)
    """

    def __init__(
        self,
        store: EventStore,
        batcher: IntakeBatcher,
        dispatcher: Dispatcher,
        publisher: EventPublisher,
        webhooks: Webhooks,
        settings: IntakeSettings,
        *,
        spool_dir: Path,
        knowledge: KnowledgeGuard,
        quotas: Quotas,
    ) -> None:
        self._store = store
        self._batcher = batcher
        self._dispatcher = dispatcher
        self._publisher = publisher
        self._webhooks = webhooks
        self._settings = settings
        self._spool_dir = spool_dir
        self._knowledge = knowledge
        self._quotas = quotas
        self._admission = PrincipalAdmission(
            store.count_active_of,
            limit=settings.pending_per_principal,
            retry_after_s=settings.retry_after_s,
        )

    async def accept(self, submission: Submission) -> EventRecord:
        """Store and dispatch the event, or return the stored one for a replay."""
        authorize(submission.principal, submission.event_type, submission.payload)
        await self._knowledge.check(submission.payload, loc=submission.fields)
        if carries_audio(submission.event_type) and not submission.audio_charged:
            await self._quotas.check_audio(submission.principal.owner)
        key = submission.key
        self._check_urls(submission)
        async with self._reservation(submission.principal.owner) as reservation:
            # An upload's hash needs its bytes: it is known only after spooling.
            digest = None if submission.upload is not None else await self._digest(submission)
            spools = submission.upload is not None or _has_base64_audio(submission.payload)
            if digest is not None and (spools or not reservation.held):
                # Otherwise the insert itself detects replays (one round trip fewer).
                existing = await self._replay(key, digest)
                if existing is not None:
                    await self._schedule_webhooks(key, submission)
                    return existing
            if not reservation.held:
                raise reservation.refusal or QueueFull(
                    max_pending=self._settings.max_pending_events,
                    retry_after_s=self._settings.retry_after_s,
                )
            spooled = await self._spool(submission)
            hold: AudioHold | None = None
            try:
                hold = await self._hold_audio(submission, spooled)
                if digest is None:
                    digest = _upload_digest(submission, spooled.audio_sha256)
                new = NewEvent(
                    key,
                    submission.event_type,
                    digest,
                    {
                        **spooled.stored,
                        **reader_fields(submission.principal),
                        **({} if hold is None else {"audio_hold": hold.stored()}),
                        **({"audio_charged": True} if submission.audio_charged else {}),
                    },
                    request_id_var.get(),
                    owner=submission.principal.owner,
                )
                outcome = await self._batcher.create(new)
            except BaseException:
                await self._quotas.release_audio(submission.principal.owner, hold)
                await _discard(spooled.path)
                raise
            if outcome.created:
                queued = outcome.record.model_dump(mode="json")
                self._publisher.publish(new.key, {"type": "status", **queued})
                reservation.dispatch(new.key, event_type=new.event_type)
                EVENTS_ACCEPTED.labels(new.event_type).inc()
            else:
                await self._quotas.release_audio(submission.principal.owner, hold)
                await _discard(spooled.path)
        await self._schedule_webhooks(key, submission)
        return outcome.record

    @asynccontextmanager
    async def _reservation(self, owner: str) -> AsyncIterator[_Reservation]:
        ticket = await self._admission.admit(owner)
        reservation = _Reservation(self._dispatcher, ticket)
        try:
            yield reservation
        finally:
            if reservation.held:
                self._dispatcher.release()
            ticket.done(created=reservation.dispatched)

    async def _hold_audio(self, submission: Submission, spooled: _Spooled) -> AudioHold | None:
        if submission.audio_charged:
            return None
        owner, event_type = submission.principal.owner, submission.event_type
        return await self._quotas.hold_audio(owner, event_type, spooled.path, loc=submission.fields)

    def _check_urls(self, submission: Submission) -> None:
        payload = submission.payload
        try:
            if submission.callback_url is not None:
                check_callback_url(submission.callback_url, self._webhooks.settings)
        except StepFailed as failure:
            raise InvalidInput.at(failure, *submission.fields, "callback_url") from None
        if isinstance(payload, SpeechPayload) and payload.audio_url is not None:
            try:
                check_audio_url(
                    payload.audio_url, allowed_hosts=self._settings.audio_url_allowed_hosts
                )
            except StepFailed as failure:
                raise InvalidInput.at(failure, *submission.fields, "audio_url") from None
        known = payload.known_speakers if isinstance(payload, SpeechOptions) else None
        for index, speaker in enumerate(known or ()):  # reference clips by URL: the same rules
            if speaker.audio_url is None:
                continue
            try:
                check_audio_url(
                    speaker.audio_url, allowed_hosts=self._settings.audio_url_allowed_hosts
                )
            except StepFailed as failure:
                where = (*submission.fields, "known_speakers", str(index), "audio_url")
                raise InvalidInput.at(failure, *where) from None

    async def _digest(self, submission: Submission) -> str:
        identity = submission.payload.model_dump(mode="json", exclude_unset=True)
        if _has_base64_audio(submission.payload):  # megabytes of base64: hash it off the loop
            return await anyio.to_thread.run_sync(body_sha256, submission.event_type, identity)
        return body_sha256(submission.event_type, identity)

    async def _replay(self, key: str, digest: str) -> EventRecord | None:
        """An earlier event with this id: identical body → replay; different body → conflict."""
        found = await anyio.to_thread.run_sync(self._store.lookup, key)
        if found is None:
            return None
        record, stored_digest = found
        if stored_digest != digest:
            raise EventConflict(record.event_id)
        return record

    async def _spool(self, submission: Submission) -> _Spooled:
        payload = submission.payload
        spool_dir, max_bytes = self._spool_dir, self._settings.max_audio_bytes
        if submission.upload is not None:
            upload = submission.upload
            name = new_spool_name()
            try:
                sha = await anyio.to_thread.run_sync(
                    lambda: copy_upload(upload, spool_dir, name, max_bytes=max_bytes)
                )
            except StepFailed as failure:
                raise InvalidInput.at(failure, *submission.fields, "file") from None
            stored = {**stored_form(payload), "audio_file": name}
            return _Spooled(stored, spool_dir / name, sha)
        if isinstance(payload, SpeechPayload):
            try:
                stored = await anyio.to_thread.run_sync(
                    lambda: spool_speech(payload, spool_dir, max_bytes=max_bytes)
                )
            except StepFailed as failure:
                raise InvalidInput.at(failure, *submission.fields, "audio_base64") from None
            spooled = stored.get("audio_file")
            return _Spooled(stored, None if spooled is None else spool_dir / spooled, None)
        return _Spooled(stored_form(payload), None, None)

    async def _schedule_webhooks(self, key: str, submission: Submission) -> None:
        if self._webhooks.targets(submission.callback_url):
            await anyio.to_thread.run_sync(self._webhooks.schedule, key, submission.callback_url)


def _has_base64_audio(payload: BaseModel) -> bool:
    return isinstance(payload, SpeechPayload) and payload.audio_base64 is not None


def _upload_digest(submission: Submission, audio_sha256: str | None) -> str:
    identity = submission.payload.model_dump(mode="json", exclude_none=True)
    return body_sha256(submission.event_type, {**identity, "audio_sha256": audio_sha256})


async def _discard(spooled: Path | None) -> None:
    if spooled is not None:
        await anyio.to_thread.run_sync(lambda: spooled.unlink(missing_ok=True))
