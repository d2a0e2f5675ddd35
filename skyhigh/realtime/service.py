"""What the realtime route needs beyond one session: the model, admission, client secrets,
and turning each session's spooled audio into a speech event (also after a crash).

One session becomes one event, when it ends (the client closes, an idle timeout or the session
limit): a `speech` event of the caller, id `realtime-<session id>`, through the normal intake,
so it is listed, transcribed in full by the service's main model, indexed and webhooked
(`callback_url` in the session). Its audio was charged to the quota as it streamed
(skyhigh.realtime.metering), so the event is marked charged and not charged again; that holds
for audio spooled by a process that died too, which becomes an event at the next start
(`recover`).
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

import anyio
from pydantic import ValidationError

from skyhigh.config import Settings
from skyhigh.domain.events import EventRecord
from skyhigh.domain.payloads import SpeechUpload
from skyhigh.domain.tenancy import Principal
from skyhigh.intake.service import Intake, Submission
from skyhigh.processing.registry import UPLOAD_TYPE
from skyhigh.realtime import spool
from skyhigh.realtime.admission import SessionAdmission
from skyhigh.realtime.client_secrets import ClientSecrets
from skyhigh.realtime.engine import RealtimeEngine
from skyhigh.realtime.spool import SessionSpool, SpooledSession

log = logging.getLogger("skyhigh.realtime")

EVENT_PREFIX = "realtime-"


def spool_directory(settings: Settings) -> Path:
    return settings.spool_dir / "realtime"


class RealtimeService:
    def __init__(self, settings: Settings, engine: RealtimeEngine | None) -> None:
        self.settings = settings.realtime
        self.engine = engine  # None: realtime is off (REALTIME_ENABLED=false)
        self.admission = SessionAdmission(settings.realtime)
        self.secrets = ClientSecrets(settings.realtime.realtime_client_secret_ttl_s)
        self.directory = spool_directory(settings)
        # A session's WAV must fit MAX_AUDIO_BYTES to become an event: cap its length to that.
        most = (settings.max_audio_bytes - spool.HEADER_BYTES) / spool.BYTES_PER_SECOND
        self.max_session_s = min(settings.realtime.realtime_max_session_s, most)

    def new_session_id(self) -> str:
        return "sess_" + secrets.token_hex(12)

    async def open_spool(self, session_id: str, principal: Principal) -> SessionSpool:
        meta = SpooledSession(
            session_id=session_id,
            event_id=EVENT_PREFIX + session_id,
            subject=principal.subject,
            method=principal.method,
            owner=principal.owner,
            scopes=sorted(principal.scopes),
            audio_charged=True,
        )
        return await anyio.to_thread.run_sync(SessionSpool, self.directory, meta)

    async def finish(self, intake: Intake, session: SessionSpool) -> EventRecord | None:
        """The session's audio as an event (None if it had no audio); the files go after."""
        await anyio.to_thread.run_sync(session.seal)
        return await self._submit(intake, session.meta)

    async def recover(self, intake: Intake) -> int:
        """Sessions a crashed process left spooled become events now; how many."""
        found = await anyio.to_thread.run_sync(spool.pending, self.directory)
        done = 0
        for meta in found:
            wav = self.directory / f"{meta.session_id}.wav"
            if wav.exists():
                await anyio.to_thread.run_sync(spool.seal, wav)
            try:
                if await self._submit(intake, meta) is not None:
                    done += 1
            except Exception:  # left spooled: the next start tries again
                log.exception("a spooled realtime session could not become an event")
        if found:
            log.info("recovered spooled realtime sessions", extra={"count": done})
        return done

    async def _submit(self, intake: Intake, meta: SpooledSession) -> EventRecord | None:
        wav = self.directory / f"{meta.session_id}.wav"
        size = await anyio.to_thread.run_sync(lambda: wav.stat().st_size if wav.exists() else 0)
        if size <= spool.HEADER_BYTES:
            await anyio.to_thread.run_sync(spool.remove, self.directory, meta.session_id)
            return None
        file = await anyio.to_thread.run_sync(wav.open, "rb")
        try:
            submission = Submission(
                meta.principal(),
                meta.event_id,
                UPLOAD_TYPE.name,
                _payload(meta),
                upload=file,
                fields=("session",),
                audio_charged=meta.audio_charged,
            )
            record = await intake.accept(submission)
        finally:
            file.close()
        await anyio.to_thread.run_sync(spool.remove, self.directory, meta.session_id)
        return record

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()


def _payload(meta: SpooledSession) -> SpeechUpload:
    options: dict[str, Any] = {
        "language": meta.language,
        "initial_prompt": meta.prompt,
        "callback_url": meta.callback_url,
        "index_transcript": meta.index_transcript,
    }
    try:
        return SpeechUpload.model_validate({k: v for k, v in options.items() if v is not None})
    except ValidationError:
        # A language Whisper does not know must not lose the audio: transcribe with detection.
        return SpeechUpload(callback_url=meta.callback_url)


def load_realtime(settings: Settings) -> RealtimeService:
    """Blocking (loads the model when REALTIME_ENABLED): call from a thread at startup."""
    engine = RealtimeEngine.load(settings) if settings.realtime.realtime_enabled else None
    return RealtimeService(settings, engine)
