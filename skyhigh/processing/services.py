"""The heavy objects of a process (models, connections), built once at startup."""

from __future__ import annotations

import ctypes
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from skyhigh.config import Settings
from skyhigh.knowledge.embedder import Embedder
from skyhigh.knowledge.search import KnowledgeBase
from skyhigh.knowledge.writer import KnowledgeWriter, WriterConfig

if TYPE_CHECKING:
    from skyhigh.speech.transcriber import TranscriberPool

log = logging.getLogger("skyhigh.processing.services")


@dataclass
class Services:
    settings: Settings
    embedder: Embedder
    knowledge: KnowledgeBase
    writer: KnowledgeWriter
    transcribers: TranscriberPool | None

    def close(self) -> None:
        self.writer.stop()


def writer_config(settings: Settings, dimension: int) -> WriterConfig:
    return WriterConfig(
        dimension=dimension,
        batch_window_s=settings.writer_batch_window_s,
        vector_index_min_rows=settings.vector_index_min_rows,
        vector_index_type=settings.vector_index_type,
        vector_index_max_segments=settings.vector_index_max_segments,
        optimize_interval_s=settings.optimize_interval_s,
        optimize_after_rows=settings.optimize_after_rows,
        keep_versions_s=settings.lancedb_keep_versions_s,
    )


def load_services(settings: Settings, *, speech: bool = True) -> Services:
    """Load every model once (call from the lifespan or a worker's start, never per request)."""
    started = time.perf_counter()
    embedder = Embedder(settings.embedding_model)
    knowledge = KnowledgeBase(
        settings.lancedb_uri,
        default_table=settings.knowledge_table,
        nprobes=settings.vector_nprobes,
        refine_factor=settings.vector_refine_factor,
    )
    writer = KnowledgeWriter(knowledge, writer_config(settings, embedder.dimension))
    transcribers = None
    if speech:
        from skyhigh.speech.transcriber import TranscriberPool

        transcribers = TranscriberPool.from_settings(settings)
    log.info(
        "models loaded",
        extra={
            "duration_s": round(time.perf_counter() - started, 2),
            "engine": settings.whisper_engine if speech else None,
            "model": settings.whisper_model if speech else None,
        },
    )
    writer.start()
    _return_freed_memory()
    return Services(settings, embedder, knowledge, writer, transcribers)


def _return_freed_memory() -> None:
    """Hand the heap that model loading freed back to the OS (measured: ~180 MiB with base).

    Loading a checkpoint allocates temporary tensors; glibc keeps the freed pages unless
    asked to trim. Elsewhere (musl, macOS) this is a no-op.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
