"""What each event type does: one function per type, registered in skyhigh.processing.registry.

A handler gets the stored payload and a `Job` (the event, the loaded services, the settings,
the publisher and the step timer); it returns the result to store, or raises `StepFailed`
with a code the client sees. The pipeline does everything around it (claim, outcome, cleanup).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from skyhigh.config import Settings
from skyhigh.domain.events import ErrorCode, Match, Segment, StepFailed, Transcript
from skyhigh.domain.payloads import (
    DocumentDeletePayload,
    DocumentPayload,
    LookupOptions,
    QueryPayload,
    SpeechJob,
)
from skyhigh.domain.tenancy import READS_ALL_OWNERS, key_namespace, public_event_id
from skyhigh.knowledge.chunking import chunk_text
from skyhigh.knowledge.documents import document_rows, embed_chunks
from skyhigh.knowledge.sql import Reader
from skyhigh.knowledge.tables import speaker_turns, transcript_row
from skyhigh.knowledge.writer import WriteOp
from skyhigh.live.publish import EventPublisher
from skyhigh.observability.metrics import STEP_SECONDS
from skyhigh.processing.services import Services

if TYPE_CHECKING:
    from skyhigh.speech.protocol import TranscribeOptions, Transcriber
    from skyhigh.speech.samples import FloatArray

log = logging.getLogger("skyhigh.processing.handlers")


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


@dataclass(frozen=True)
class Job:
    """One run of one event, as its handler sees it.

    `key` is the event's storage key (skyhigh.domain.tenancy): for the store, live streams,
    spool names. Whatever a client, a webhook or a searchable row sees gets `public_id`.
    """

    key: str
    services: Services
    settings: Settings
    publisher: EventPublisher
    step: StepTimer
    # What the run consumed, for quotas: "audio_s", the seconds of audio decoded.
    usage: dict[str, float] = field(default_factory=dict)

    @property
    def public_id(self) -> str:
        return public_event_id(self.key)

    def publish(self, message: dict[str, Any]) -> None:
        self.publisher.publish(self.key, message)


def _reader(job: Job, payload: dict[str, Any]) -> tuple[Reader, dict[str, Any]]:
    """Whose per-owner rows this event's lookup sees, and the payload without intake's mark."""
    fields = dict(payload)
    if fields.pop(READS_ALL_OWNERS, False):
        return Reader.everyone(), fields
    return Reader(key_namespace(job.key)), fields


def run_query(payload: dict[str, Any], job: Job) -> dict[str, Any]:
    reader, fields = _reader(job, payload)
    query = QueryPayload.model_validate(fields)
    matches = _lookup(job, query.text, _embed(job, query.text), query, reader)
    return {"matches": [m.model_dump(mode="json") for m in matches], "timings": job.step.timings}


def run_document(payload: dict[str, Any], job: Job) -> dict[str, Any]:
    document = DocumentPayload.model_validate(payload)
    assert document.document_id is not None  # intake fills it in
    knowledge = job.settings.knowledge
    table = document.table or knowledge.knowledge_table
    with job.step("chunk"):
        chunks = chunk_text(
            document.text, size=knowledge.chunk_size, overlap=knowledge.chunk_overlap
        )
    with job.step("embed"):
        vectors = embed_chunks(document, chunks, job.services.embedder)
    rows = document_rows(document, chunks, vectors)
    with job.step("write"):
        op = WriteOp(table, "documents", rows, replace_documents=[document.document_id])
        replaced = job.services.writer.submit(op).result()
    return {
        "document_id": document.document_id,
        "table": table,
        "chunks": len(rows),
        "replaced_chunks": replaced,
        "timings": job.step.timings,
    }


def run_document_delete(payload: dict[str, Any], job: Job) -> dict[str, Any]:
    delete = DocumentDeletePayload.model_validate(payload)
    table = delete.table or job.settings.knowledge_table
    job.services.knowledge.table(table)  # table_not_found before anything is queued
    with job.step("write"):
        op = WriteOp(table, "documents", [], replace_documents=[delete.document_id])
        deleted = job.services.writer.submit(op).result()
    return {"document_id": delete.document_id, "table": table, "deleted_chunks": deleted}


def run_speech(payload: dict[str, Any], job: Job) -> dict[str, Any]:
    # Imported here: a process that never transcribes (an API-only one) never loads torch.
    from skyhigh.speech.decode import load_audio
    from skyhigh.speech.protocol import TranscribeOptions
    from skyhigh.speech.samples import SAMPLE_RATE

    reader, fields = _reader(job, payload)
    speech = SpeechJob.model_validate(fields)
    pool = job.services.transcribers
    if pool is None:
        raise StepFailed(ErrorCode.INTERNAL_ERROR, "speech is disabled on this server")
    if speech.lookup:  # table_not_found before any audio is transcribed (or charged)
        job.services.knowledge.table(speech.table)
    with job.step("decode"):
        path = _audio_path(job, speech)
        try:
            samples = load_audio(
                path,
                max_seconds=job.settings.max_audio_seconds,
                timeout_s=job.settings.ffmpeg_timeout_s,
                decoder=job.settings.audio_decoder,
            )
        except StepFailed as failure:
            if failure.code == ErrorCode.AUDIO_TOO_LONG:  # decoded up to the limit: charged
                job.usage["audio_s"] = job.settings.max_audio_seconds
            raise
        job.usage["audio_s"] = len(samples) / SAMPLE_RATE
    options = TranscribeOptions(
        language=speech.language,
        task=speech.task,
        # Diarization splits segments at speaker changes between words: it needs their times.
        word_timestamps=speech.word_timestamps or speech.diarize,
        initial_prompt=speech.initial_prompt,
    )

    with job.step("transcribe"), pool.borrow() as transcriber:
        transcript = _transcribe(job, transcriber, samples, options)
    if speech.diarize:
        transcript = _diarize(job, speech, samples, transcript)
    job.publish({"type": "transcript", "transcript": transcript.model_dump(mode="json")})
    matches: list[Match] = []
    text = transcript.text.strip()
    wanted = text and (speech.lookup or speech.index_transcript)
    vector = _embed(job, text) if wanted else None
    if speech.index_transcript and vector is not None:
        _index_transcript(job, transcript, vector)
    if speech.lookup and vector is not None:
        matches = _lookup(job, text, vector, speech, reader)
        job.publish({"type": "matches", "matches": [m.model_dump(mode="json") for m in matches]})
    return {
        "transcript": transcript.model_dump(mode="json"),
        "matches": [m.model_dump(mode="json") for m in matches],
        "timings": job.step.timings,
        "model": {"engine": pool.engine, "name": pool.model_name, "sha256": pool.sha256},
    }


def _transcribe(
    job: Job, transcriber: Transcriber, samples: FloatArray, options: TranscribeOptions
) -> Transcript:
    """Transcribe, publishing segments; past MAX_TRANSCRIBE_SECONDS (checked between decode
    steps: batches, chunks, windows) the event fails, so it cannot hold a model for hours."""
    from skyhigh.speech.deadline import Deadline, TranscriptionTimeout

    limit_s = job.settings.max_transcribe_seconds
    try:
        return transcriber.transcribe(
            samples, options, on_segment=_segment_sink(job), deadline=Deadline(limit_s)
        )
    except TranscriptionTimeout:
        raise StepFailed(
            ErrorCode.AUDIO_TOO_LONG,
            f"transcription took longer than {limit_s:g} s (MAX_TRANSCRIBE_SECONDS); "
            "send shorter audio",
        ) from None


def _diarize(
    job: Job, speech: SpeechJob, samples: FloatArray, transcript: Transcript
) -> Transcript:
    """Speakers on the transcript's segments and words; live listeners get a `speakers`
    message that re-labels the segments they were sent (split ones are renumbered)."""
    from skyhigh.speech.diarization import SpeakerHints
    from skyhigh.speech.diarization.references import load_known_speakers
    from skyhigh.speech.diarization.service import diarize_transcript

    model = job.services.speaker_model
    if model is None:
        raise StepFailed(
            ErrorCode.INTERNAL_ERROR, "diarization is disabled on this server (DIARIZATION=false)"
        )
    hints = SpeakerHints(
        num_speakers=speech.num_speakers,
        min_speakers=speech.min_speakers,
        max_speakers=speech.max_speakers,
    )
    with job.step("diarize"):
        known = load_known_speakers(
            speech.known_speakers or (),
            job.settings,
            work_prefix=url_download_path(job.settings.spool_dir, job.key),
        )
        labelled = diarize_transcript(model.get(), samples, transcript, hints=hints, known=known)
    if not speech.word_timestamps:  # asked for by diarization only: not part of the answer
        segments = [s.model_copy(update={"words": None}) for s in labelled.segments]
        labelled = labelled.model_copy(update={"segments": segments})
    job.publish(
        {
            "type": "speakers",
            "speakers": [s.model_dump(mode="json") for s in labelled.speakers or ()],
            "segments": [s.model_dump(mode="json") for s in labelled.segments],
        }
    )
    return labelled


def _segment_sink(job: Job) -> Callable[[Segment], None]:
    """Publishes each segment as soon as it is decoded."""

    def on_segment(segment: Segment) -> None:
        job.publish({"type": "segment", "segment": segment.model_dump(mode="json")})

    return on_segment


def _embed(job: Job, text: str) -> NDArray[np.float32]:
    with job.step("embed"):
        vector: NDArray[np.float32] = job.services.embedder.embed([text])[0]
    return vector


def _lookup(
    job: Job, text: str, vector: NDArray[np.float32], options: LookupOptions, reader: Reader
) -> list[Match]:
    with job.step("lookup"):
        return job.services.knowledge.search(
            vector,
            text=text,
            table=options.table,
            k=options.k,
            filter=options.filter,
            mode=options.mode,
            min_score=options.min_score,
            reader=reader,
        )


def _index_transcript(job: Job, transcript: Transcript, vector: NDArray[np.float32]) -> None:
    """One row (`vector` is the whole text's), or with speakers one row per speaker turn, so a
    `speaker` filter returns exactly that speaker's words. The rows belong to the event's
    owner; only the public event id is ever shown."""
    language = transcript.language
    with job.step("index"):  # a diarized transcript's turns are embedded here
        turns = speaker_turns(transcript)
        if turns:
            vectors = job.services.embedder.embed([text for _, text in turns])
            rows = [
                transcript_row(job.key, text=text, language=language, vector=v, speaker=who, turn=n)
                for n, ((who, text), v) in enumerate(zip(turns, vectors, strict=True))
            ]
        else:
            text = transcript.text.strip()
            rows = [transcript_row(job.key, text=text, language=language, vector=vector)]
        op = WriteOp(job.settings.transcripts_table, "transcripts", rows)
        job.services.writer.submit(op).result()


def url_download_path(spool_dir: Path, key: str) -> Path:
    """Where an `audio_url` download is kept while its event runs."""
    return spool_dir / f"url-{key}"


def _audio_path(job: Job, speech: SpeechJob) -> Path:
    from skyhigh.speech.audio_url import fetch_audio_url

    settings = job.settings
    if speech.audio_file is not None:
        path = settings.spool_dir / speech.audio_file
        if not path.exists():
            raise StepFailed(ErrorCode.INTERNAL_ERROR, "spooled audio is missing")
        return path
    assert speech.audio_url is not None  # SpeechJob always has one source
    return fetch_audio_url(
        speech.audio_url,
        url_download_path(settings.spool_dir, job.key),
        allowed_hosts=settings.audio_url_allowed_hosts,
        allow_private=settings.audio_url_allow_private,
        max_bytes=settings.max_audio_bytes,
        timeout_s=settings.audio_url_timeout_s,
    )
