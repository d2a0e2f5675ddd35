"""One realtime transcription session: client events in, server events out, turns decoded.

`handle` takes each parsed client event (the route reads the socket); `run_decoder` is the
session's one decoding task. Audio flows: append -> 16 kHz (audio_formats) -> spooled to disk
and fed to the VAD (on a worker thread) -> the input buffer. A VAD start opens a turn, a stop
(or a manual commit) closes it: `committed`, then the turn's full decode as `completed`. While
a turn is open the decoder re-decodes it every REALTIME_PARTIAL_INTERVAL_MS and sends the words
two successive decodes agree on as `delta`s (turns.StablePrefix). Knobs for the latency of the
first delta: REALTIME_FIRST_DECODE_MS (a young turn's first decode once it holds that much
speech, not at the next interval) and REALTIME_SETTLED_WORD_S (words ending that long before the
decoded audio's end go out after one decode). REALTIME_CONTEXT_CHARS: the end of the session's
completed text prompts each final decode.

With `turn_detection: null` there is no VAD: the whole buffer is the open turn until the client
commits. `clear` drops the buffer and the open turn (their audio stays in the session's event).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import numpy as np
from pydantic import ValidationError

from skyhigh.config import RealtimeSettings
from skyhigh.realtime import protocol as p
from skyhigh.realtime.audio_formats import AudioConverter
from skyhigh.realtime.engine import RealtimeEngine
from skyhigh.realtime.spool import SessionSpool
from skyhigh.realtime.turns import Boundary, StablePrefix, StreamingVad, VadConfig, ms
from skyhigh.speech.samples import SAMPLE_RATE, FloatArray

Send = Callable[[dict[str, Any]], Awaitable[None]]
MIN_COMMIT_MS = 100  # OpenAI refuses to commit less
MIN_NEW_AUDIO_S = 0.25  # a partial decode needs this much audio since the last one
EMPTY = np.zeros(0, dtype=np.float32)


@dataclass
class Turn:
    item_id: str
    start: int  # sample (since the session began) where the turn's audio starts
    prefix: StablePrefix = field(default_factory=StablePrefix)
    speech: int = 0  # sample where the VAD heard the speech start
    decoded_samples: int = 0  # turn length at the last partial decode


@dataclass
class Closed:
    item_id: str
    audio: FloatArray
    queued_at: float


class RealtimeSession:
    def __init__(
        self,
        session_id: str,
        *,
        engine: RealtimeEngine,
        settings: RealtimeSettings,
        spool: SessionSpool,
        send: Send,
    ) -> None:
        self.session_id = session_id
        self._engine = engine
        self._settings = settings
        self.spool = spool
        self._send = send
        self.format = p.AudioFormat()
        self.transcription = p.Transcription()
        self._vad_defaults = VadConfig(silence_duration_ms=settings.realtime_silence_duration_ms)
        self.vad_config: VadConfig | None = self._vad_defaults
        self._converter = AudioConverter()
        self._vad: StreamingVad | None = None
        self._buffer = EMPTY  # the uncommitted input audio
        self._buffer_start = 0  # its first sample, counted since the session began
        self._turn: Turn | None = None
        self._previous_item: str | None = None
        self._closed: deque[Closed] = deque()
        self._wake = anyio.Event()  # a turn closed, or a new one is ready for its first decode
        self._context = ""  # the completed turns' text, for the final decodes' prompt

    # ----------------------------------------------------------------- client events

    async def handle(self, event: dict[str, Any]) -> None:
        kind, client_id = event.get("type"), event.get("event_id")
        client_id = client_id if isinstance(client_id, str) else None
        if kind == p.APPEND:
            await self._append(event, client_id)
        elif kind == p.COMMIT:
            await self._commit(client_id)
        elif kind == p.CLEAR:
            self._clear()
            await self._send(p.server_event("input_audio_buffer.cleared"))
        elif kind == p.SESSION_UPDATE:
            await self._update(event, client_id)
        else:
            supported = ", ".join(p.CLIENT_EVENTS)
            await self.error(
                f"unsupported event type {kind!r} in a transcription session; send one of "
                f"{supported}",
                code="unknown_event",
                param="type",
                client_id=client_id,
            )

    async def error(
        self, message: str, *, code: str, param: str | None = None, client_id: str | None = None
    ) -> None:
        await self._send(p.error_event(message, code=code, param=param, client_event_id=client_id))

    async def _update(self, event: dict[str, Any], client_id: str | None) -> None:
        try:
            update, turn_given = p.parse_session_update(event)
            audio_input = update.audio.input if update.audio and update.audio.input else None
            fmt = audio_input.format if audio_input and audio_input.format else self.format
            converter = AudioConverter(fmt.type, fmt.sample_rate())
        except (ValidationError, ValueError) as exc:
            message, param = (
                p.validation_message(exc) if isinstance(exc, ValidationError) else (str(exc), None)
            )
            await self.error(message, code="invalid_session", param=param, client_id=client_id)
            return
        if fmt != self.format:
            self.format, self._converter = fmt, converter
        if audio_input is not None and audio_input.transcription is not None:
            self.transcription = audio_input.transcription
        if turn_given:
            detection = audio_input.turn_detection if audio_input else None
            self.vad_config = None if detection is None else detection.config(self._vad_defaults)
            self._vad = None  # rebuilt with the new knobs on the next append
        meta = self.spool.meta
        fresh = replace(
            meta,
            language=self.transcription.language,
            prompt=self.transcription.prompt,
            callback_url=update.callback_url or meta.callback_url,
            index_transcript=update.index_transcript,
        )
        await anyio.to_thread.run_sync(self.spool.update, fresh)
        await self._send(p.server_event("session.updated", session=self.describe()))

    def describe(self) -> dict[str, Any]:
        return p.session_object(
            self.session_id,
            fmt=self.format,
            transcription=self.transcription,
            vad_config=self.vad_config,
            model=self._engine.model_name,
            skyhigh_event_id=self.spool.meta.event_id,
        )

    async def _append(self, event: dict[str, Any], client_id: str | None) -> None:
        encoded = event.get("audio")
        limit = self._settings.realtime_max_append_bytes
        if not isinstance(encoded, str) or not encoded:
            await self.error("`audio` must be base64 audio", code="invalid_audio", param="audio")
            return
        if len(encoded) * 3 // 4 > limit:
            await self.error(
                f"an append carries at most {limit} bytes of audio (REALTIME_MAX_APPEND_BYTES); "
                "send smaller pieces",
                code="append_too_large",
                param="audio",
                client_id=client_id,
            )
            return
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            await self.error("`audio` is not valid base64", code="invalid_audio", param="audio")
            return
        samples = self._converter.convert(data)
        if self.vad_config is not None and self._vad is None:
            self._vad = StreamingVad(self.vad_config)
        vad = self._vad
        boundaries = await anyio.to_thread.run_sync(self._spool_and_judge, samples, vad)
        await self._take(samples, boundaries)

    def _spool_and_judge(self, samples: FloatArray, vad: StreamingVad | None) -> list[Boundary]:
        self.spool.append(samples)
        return [] if vad is None else vad.feed(samples)

    async def _take(self, samples: FloatArray, boundaries: list[Boundary]) -> None:
        """Add the samples to the buffer, acting on the VAD's starts and stops in order."""
        self._buffer = np.concatenate([self._buffer, samples]) if len(samples) else self._buffer
        for boundary in boundaries:
            if boundary.kind == "start" and self._turn is None:
                await self._open(boundary)
            elif boundary.kind == "stop" and self._turn is not None:
                item = self._turn.item_id
                await self._send(
                    p.server_event(
                        "input_audio_buffer.speech_stopped", audio_end_ms=boundary.ms, item_id=item
                    )
                )
                # A little audio past the stop: word endings fade below the VAD's threshold.
                await self._close_turn(boundary.sample + ms(200))
        if self.vad_config is None and self._turn is None and len(self._buffer):
            self._turn = Turn(p.item_id(), self._buffer_start)
        elif self._turn is None:
            self._trim_idle_buffer()
        turn = self._turn
        first = self._settings.realtime_first_decode_ms
        if turn is not None and first and not turn.decoded_samples:
            if self._end - max(turn.speech, turn.start) >= ms(first):
                self._wake.set()  # decode the young turn now, not at the next interval
        if (
            turn is not None
            and self._end - turn.start > self._settings.realtime_max_turn_s * SAMPLE_RATE
        ):
            await self._close_turn(self._end)  # Whisper hears at most 30 s at once
            if self._vad is not None and self._vad.speaking:  # the speech goes on: a new turn
                await self._open(Boundary("start", self._end))

    async def _open(self, boundary: Boundary) -> None:
        assert self.vad_config is not None
        start = max(self._buffer_start, boundary.sample - ms(self.vad_config.prefix_padding_ms))
        self._turn = Turn(p.item_id(), start, speech=boundary.sample)
        await self._send(
            p.server_event(
                "input_audio_buffer.speech_started",
                audio_start_ms=start * 1000 // SAMPLE_RATE,
                item_id=self._turn.item_id,
            )
        )

    @property
    def _end(self) -> int:
        return self._buffer_start + len(self._buffer)

    def _trim_idle_buffer(self) -> None:
        # Between turns only the prefix padding can still become part of a turn.
        assert self.vad_config is not None
        keep = ms(self.vad_config.prefix_padding_ms)
        if len(self._buffer) > keep:
            self._buffer_start += len(self._buffer) - keep
            self._buffer = self._buffer[-keep:]

    async def _commit(self, client_id: str | None) -> None:
        if len(self._buffer) < ms(MIN_COMMIT_MS):
            await self.error(
                f"buffer too small: expected at least {MIN_COMMIT_MS} ms of audio, have "
                f"{len(self._buffer) * 1000 // SAMPLE_RATE} ms",
                code="input_audio_buffer_commit_empty",
                client_id=client_id,
            )
            return
        if self._turn is None:
            self._turn = Turn(p.item_id(), self._buffer_start)
        await self._close_turn(self._end)
        if self._vad is not None:
            self._vad.reset()

    async def _close_turn(self, end: int) -> None:
        """Commit the open turn's audio up to `end` and queue its full decode."""
        turn = self._turn
        assert turn is not None
        end = min(end, self._end)
        audio = self._buffer[turn.start - self._buffer_start : end - self._buffer_start].copy()
        self._buffer = self._buffer[end - self._buffer_start :]
        self._buffer_start = end
        self._turn = None
        self._closed.append(Closed(turn.item_id, audio, time.monotonic()))
        await self._send(
            p.server_event(
                "input_audio_buffer.committed",
                item_id=turn.item_id,
                previous_item_id=self._previous_item,
            )
        )
        self._previous_item = turn.item_id
        self._wake.set()

    def _clear(self) -> None:
        self._buffer_start += len(self._buffer)
        self._buffer = EMPTY
        self._turn = None
        if self._vad is not None:
            self._vad.reset()

    # ----------------------------------------------------------------- decoding

    def lag_s(self) -> float:
        """How long the oldest closed turn has waited for its final decode."""
        return time.monotonic() - self._closed[0].queued_at if self._closed else 0.0

    async def run_decoder(self) -> None:
        """Finals first (each turn's full decode, in order), else a partial of the open turn,
        at most one per REALTIME_PARTIAL_INTERVAL_MS; a closed turn cuts the wait short."""
        interval = self._settings.realtime_partial_interval_ms / 1000
        while True:
            if self._closed:
                await self._final(self._closed[0])
                self._closed.popleft()
                continue
            started = time.monotonic()
            await self._partial()
            with anyio.move_on_after(interval - (time.monotonic() - started)):
                await self._wake.wait()
            self._wake = anyio.Event()

    async def _final(self, closed: Closed) -> None:
        text = await self._decode(closed.audio, self._prompt_with_context())
        self._context = f"{self._context} {text}".strip()[-1000:]
        await self._send(
            p.server_event(
                "conversation.item.input_audio_transcription.completed",
                item_id=closed.item_id,
                content_index=0,
                transcript=text,
                usage={"type": "duration", "seconds": round(len(closed.audio) / SAMPLE_RATE, 3)},
            )
        )

    async def _partial(self) -> bool:
        """Decode the open turn again if enough new audio came; whether it decoded."""
        turn = self._turn
        if turn is None or (self._vad is not None and self._vad.pausing):
            return False  # in a pause the decoder stays free for the final that may come
        length = self._end - turn.start
        if length - turn.decoded_samples < MIN_NEW_AUDIO_S * SAMPLE_RATE:
            return False
        audio = self._buffer[turn.start - self._buffer_start :].copy()
        turn.decoded_samples = length
        margin = self._settings.realtime_settled_word_s
        if margin:
            words = await self._engine.decode_words(
                audio, language=self.transcription.language, prompt=self.transcription.prompt
            )
            cutoff = len(audio) / SAMPLE_RATE - margin
            settled = next((i for i, w in enumerate(words) if w.end > cutoff), len(words))
            delta = turn.prefix.update([w.word for w in words], settled)
        else:
            delta = turn.prefix.update(await self._decode(audio, self.transcription.prompt))
        if delta:
            await self._send(
                p.server_event(
                    "conversation.item.input_audio_transcription.delta",
                    item_id=turn.item_id,
                    content_index=0,
                    delta=delta,
                )
            )
        return True

    def _prompt_with_context(self) -> str | None:
        """The session's prompt, then the end of the completed turns' text (at a word)."""
        chars, prompt = self._settings.realtime_context_chars, self.transcription.prompt
        if not chars or not self._context:
            return prompt
        context = self._context[-chars:]
        if len(self._context) > chars:
            context = context.partition(" ")[2] or context
        return f"{prompt} {context}" if prompt else context

    async def _decode(self, audio: FloatArray, prompt: str | None) -> str:
        return await self._engine.decode(audio, language=self.transcription.language, prompt=prompt)
