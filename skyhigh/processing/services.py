"""The heavy objects of a process (models, connections), built once at startup."""

from __future__ import annotations

import ctypes
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from skyhigh.config import Settings
from skyhigh.knowledge.embedder import Embedder, load_embedder
from skyhigh.knowledge.search import KnowledgeBase
from skyhigh.knowledge.seeding import seed_if_empty
from skyhigh.knowledge.storage import open_knowledge_base, storage_options
from skyhigh.knowledge.writer import KnowledgeWriter, WriterConfig
from skyhigh.speech.threads import keep_openmp_spinning

if TYPE_CHECKING:
    from skyhigh.speech.diarization.service import SpeakerModel
    from skyhigh.speech.pool import TranscriberPool

log = logging.getLogger("skyhigh.processing.services")


@dataclass
class Services:
    settings: Settings
    embedder: Embedder
    knowledge: KnowledgeBase
    writer: KnowledgeWriter
    transcribers: TranscriberPool
    # None when DIARIZATION is off; otherwise loads its model on the first diarized event.
    speaker_model: SpeakerModel | None = None

    def close(self) -> None:
        self.writer.stop()


def load_services(settings: Settings) -> Services:
    """Load every model once (call from the lifespan or a worker's start, never per request)."""
    started = time.perf_counter()
    keep_openmp_spinning()  # before the embedder too: its torch fallback loads libgomp first
    config = settings.knowledge
    embedder = load_embedder(config, cache_dir=settings.model_cache_dir)
    knowledge = open_knowledge_base(config)
    if config.seed_empty_knowledge:
        seed_if_empty(knowledge, embedder, storage_options=storage_options(config))
    writer = KnowledgeWriter(
        knowledge, WriterConfig.from_settings(config, dimension=embedder.dimension)
    )
    # Imported here: a process that loads no models (an API-only one) never loads torch for it.
    from skyhigh.speech.diarization.service import SpeakerModel
    from skyhigh.speech.pool import TranscriberPool

    transcribers = TranscriberPool.from_settings(settings.speech)
    speaker_model = SpeakerModel(settings.speech) if settings.diarization else None
    log.info(
        "models loaded",
        extra={
            "duration_s": round(time.perf_counter() - started, 2),
            "engine": settings.whisper_engine,
            "model": settings.whisper_model,
        },
    )
    writer.start()
    _return_freed_memory()
    return Services(settings, embedder, knowledge, writer, transcribers, speaker_model)


def _return_freed_memory() -> None:
    """Hand the heap that model loading freed back to the OS (measured: ~180 MiB with base).

    Loading a checkpoint allocates temporary tensors; glibc keeps the freed pages unless
    asked to trim. Elsewhere (musl, macOS) this is a no-op.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
