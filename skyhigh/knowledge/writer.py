"""The one writer of the knowledge base: batches writes per table, keeps indexes current.

LanceDB commits optimistically; two writers committing to one table at once conflict.
So every write in a process goes through this thread, which also batches what arrives
together into a single commit per table, and runs index upkeep and compaction from one
place: on a schedule and after bulk writes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pyarrow as pa

from skyhigh.config import KnowledgeSettings
from skyhigh.domain.events import ErrorCode, StepFailed
from skyhigh.domain.payloads import DOCUMENT_COLUMNS
from skyhigh.knowledge.documents import check_metadata_columns
from skyhigh.knowledge.search import KnowledgeBase
from skyhigh.knowledge.sql import quote_list
from skyhigh.knowledge.tables import (
    add_speaker_column,
    adopt_legacy_transcripts,
    create_text_index,
    create_vector_index,
    documents_schema,
    has_positions,
    is_owned,
    is_transcripts,
    text_index,
    transcripts_schema,
)

log = logging.getLogger("skyhigh.knowledge.writer")

MetadataValue = str | int | float | bool


@dataclass
class WriteOp:
    """Rows to upsert by `id`, replacing every earlier row of `replace_documents`."""

    table: str
    kind: str  # "documents" or "transcripts": which schema a new table gets
    rows: list[dict[str, Any]]
    replace_documents: list[str] = field(default_factory=list)
    future: Future[int] = field(default_factory=Future)


@dataclass
class WriterConfig:
    dimension: int
    batch_window_s: float = 0.02
    max_batch_ops: int = 256
    vector_index_min_rows: int = 10_000
    vector_index_type: str = "IVF_HNSW_SQ"
    vector_index_max_segments: int = 8
    optimize_interval_s: float = 300.0
    optimize_after_rows: int = 2_000
    keep_versions_s: float = 600.0
    max_metadata_columns: int = 32

    @classmethod
    def from_settings(cls, settings: KnowledgeSettings, *, dimension: int) -> WriterConfig:
        return cls(
            dimension=dimension,
            batch_window_s=settings.writer_batch_window_s,
            vector_index_min_rows=settings.vector_index_min_rows,
            vector_index_type=settings.vector_index_type,
            vector_index_max_segments=settings.vector_index_max_segments,
            optimize_interval_s=settings.optimize_interval_s,
            optimize_after_rows=settings.optimize_after_rows,
            keep_versions_s=settings.lancedb_keep_versions_s,
            max_metadata_columns=settings.knowledge_max_metadata_columns,
        )


_STOP = object()
_UPGRADE = object()  # bring tables made by older versions up to date (see _upgrade_tables)


def _column_type(value: MetadataValue) -> tuple[pa.DataType, str]:
    if isinstance(value, bool):
        return pa.bool_(), "boolean"
    if isinstance(value, int):
        return pa.int64(), "bigint"
    if isinstance(value, float):
        return pa.float64(), "double"
    return pa.string(), "string"


def _compatible(existing: pa.DataType, value: MetadataValue) -> bool:
    if isinstance(value, bool):
        return bool(pa.types.is_boolean(existing))
    if isinstance(value, int):
        return bool(pa.types.is_integer(existing) or pa.types.is_floating(existing))
    if isinstance(value, float):
        return bool(pa.types.is_floating(existing))
    return bool(pa.types.is_string(existing) or pa.types.is_large_string(existing))


class KnowledgeWriter:
    """Usage::

    writer = KnowledgeWriter(kb, WriterConfig(dimension=384))
    writer.start()
    chunks = writer.submit(WriteOp("knowledge", "documents", rows, ["doc-1"])).result()
    writer.stop()
    """

    def __init__(self, kb: KnowledgeBase, config: WriterConfig) -> None:
        self.kb = kb
        self.config = config
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="skyhigh-kb-writer", daemon=True)
        self._dirty: set[str] = set()
        self._rows_since_upkeep = 0
        self._next_upkeep = time.monotonic() + config.optimize_interval_s

    def start(self) -> None:
        """Start the writer thread; its first job brings older tables up to date."""
        self._queue.put(_UPGRADE)
        self._thread.start()

    def stop(self, *, timeout_s: float = 60.0) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout_s)

    def submit(self, op: WriteOp) -> Future[int]:
        """Queue a write; the future gives the number of rows the op removed."""
        if not self._thread.is_alive():
            # Used without a thread (one-shot scripts): apply inline.
            self._apply(op.table, [op])
            return op.future
        self._queue.put(op)
        return op.future

    def upkeep_now(self) -> Future[None]:
        """Run index upkeep and compaction on every table the writer touched (or all)."""
        done: Future[None] = Future()
        if self._thread.is_alive():
            self._queue.put(done)
        else:
            self._upkeep(force=True)
            done.set_result(None)
        return done

    # --- the writer thread ---

    def _run(self) -> None:
        while True:
            timeout = max(0.0, self._next_upkeep - time.monotonic())
            try:
                first = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._safe_upkeep(force=False)
                continue
            if first is _STOP:
                self._safe_upkeep(force=False)
                return
            if first is _UPGRADE:
                self._upgrade_tables()
                continue
            batch = [first, *self._drain()]
            stop = _STOP in batch
            self._apply_batch([item for item in batch if isinstance(item, WriteOp)])
            for item in batch:
                if isinstance(item, Future) and not isinstance(item, WriteOp):
                    self._safe_upkeep(force=True)
                    item.set_result(None)
            if self._rows_since_upkeep >= self.config.optimize_after_rows:
                self._safe_upkeep(force=False)
            if stop:
                return

    def _drain(self) -> list[object]:
        items: list[object] = []
        deadline = time.monotonic() + self.config.batch_window_s
        while len(items) < self.config.max_batch_ops:
            try:
                items.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return items

    def _apply_batch(self, ops: list[WriteOp]) -> None:
        by_table: dict[str, list[WriteOp]] = {}
        for op in ops:
            by_table.setdefault(op.table, []).append(op)
        for table, table_ops in by_table.items():
            self._apply(table, table_ops)

    def _apply(self, table_name: str, ops: list[WriteOp]) -> None:
        try:
            fresh = table_name not in self.kb.table_names()
            table = self._create(table_name, ops[0].kind) if fresh else self.kb.table(table_name)
            if is_transcripts(table.schema):
                adopt_legacy_transcripts(table)  # before a row with an owner is written
                add_speaker_column(table)
            accepted = [op for op in ops if self._fits(table, op) and self._evolve(table, op)]
            if not accepted:
                return
            removed = [self._count_documents(table, op.replace_documents) for op in accepted]
            self._commit(table, accepted)
            if fresh or self._index_due(table):
                # Full-text search needs its index from the first row on, and a table that
                # just passed the threshold gets its vector index now, not at the next tick.
                self.maintain_table(table)
        except Exception as exc:
            log.exception("knowledge write failed")
            for op in ops:
                if not op.future.done():
                    op.future.set_exception(exc)
            return
        self._dirty.add(table_name)
        for op, count in zip(accepted, removed, strict=True):
            self._rows_since_upkeep += len(op.rows)
            op.future.set_result(count)

    def _create(self, name: str, kind: str) -> Any:
        schema = (
            transcripts_schema(self.config.dimension)
            if kind == "transcripts"
            else documents_schema(self.config.dimension)
        )
        return self.kb.create_table(name, schema)

    @staticmethod
    def _fits(table: Any, op: WriteOp) -> bool:
        """Documents never go into a per-owner table (its rows would belong to nobody)."""
        if op.kind == "documents" and is_owned(table.schema):
            op.future.set_exception(
                StepFailed(
                    ErrorCode.TABLE_NOT_WRITABLE,
                    f"table {table.name!r} holds transcripts; documents go to another table",
                )
            )
            return False
        return True

    def _upgrade_tables(self) -> None:
        """Transcript rows from before rows had owners get theirs (until then only admins see
        them), transcripts tables from before diarization a `speaker` column (filterable), and
        full-text indexes without word positions get them (phrase search)."""
        for name in self.kb.table_names():
            try:
                table = self.kb.table(name)
                if is_transcripts(table.schema):
                    adopt_legacy_transcripts(table)
                    add_speaker_column(table)
                index = text_index(table)
                if index is not None and not has_positions(index):
                    create_text_index(table)
            except Exception:
                log.exception("upgrading knowledge table %r failed", name)

    def _evolve(self, table: Any, op: WriteOp) -> bool:
        """Add columns for new metadata keys; fail the op (only) on a type clash."""
        schema: pa.Schema = table.schema
        new_columns: dict[str, str] = {}
        for row in op.rows:
            for key, value in row.items():
                if key in DOCUMENT_COLUMNS or not isinstance(value, str | int | float | bool):
                    continue  # only flat metadata values become columns
                if key in schema.names:
                    if not _compatible(schema.field(key).type, value):
                        op.future.set_exception(
                            StepFailed(
                                ErrorCode.INVALID_METADATA,
                                f"metadata {key!r} is {type(value).__name__} here but "
                                f"{schema.field(key).type} in table {table.name!r}",
                            )
                        )
                        return False
                elif key not in new_columns:
                    new_columns[key] = f"CAST(NULL AS {_column_type(value)[1]})"
        if new_columns:
            try:
                check_metadata_columns(
                    schema.names,
                    new_columns,
                    max_columns=self.config.max_metadata_columns,
                    table=table.name,
                )
            except StepFailed as failure:
                op.future.set_exception(failure)
                return False
            table.add_columns(new_columns)
        return True

    def _index_due(self, table: Any) -> bool:
        if table.count_rows() < self.config.vector_index_min_rows:
            return False
        return all(tuple(index.columns) != ("vector",) for index in table.list_indices())

    @staticmethod
    def _count_documents(table: Any, document_ids: list[str]) -> int:
        if not document_ids or "document_id" not in table.schema.names:
            return 0
        return int(table.count_rows(f"document_id IN ({quote_list(document_ids)})"))

    @staticmethod
    def _commit(table: Any, ops: list[WriteOp]) -> None:
        rows = [row for op in ops for row in op.rows]
        replaced = sorted({doc for op in ops for doc in op.replace_documents})
        if not rows:
            table.delete(f"document_id IN ({quote_list(replaced)})")
            return
        data = pa.Table.from_pylist(rows, schema=table.schema)
        merge = table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all()
        if replaced:
            # One commit upserts the new chunks and drops the old ones of the same documents.
            merge = merge.when_not_matched_by_source_delete(
                f"document_id IN ({quote_list(replaced)})"
            )
        merge.execute(data)

    # --- upkeep ---

    def _safe_upkeep(self, *, force: bool) -> None:
        try:
            self._upkeep(force=force)
        except Exception:
            log.exception("knowledge upkeep failed")
        finally:
            self._next_upkeep = time.monotonic() + self.config.optimize_interval_s

    def _upkeep(self, *, force: bool) -> None:
        names = self.kb.table_names() if force else sorted(self._dirty)
        for name in names:
            self.maintain_table(self.kb.table(name))
        self._dirty.clear()
        self._rows_since_upkeep = 0

    def maintain_table(self, table: Any) -> None:
        rows = table.count_rows()
        if rows == 0:
            return
        indexed = {tuple(index.columns): str(index.index_type) for index in table.list_indices()}
        text = text_index(table)
        if text is None or not has_positions(text):
            create_text_index(table)  # an index from before phrase search gets positions
        if ("vector",) not in indexed and rows >= self.config.vector_index_min_rows:
            started = time.perf_counter()
            create_vector_index(table, self.config.vector_index_type)
            log.info(
                "vector index built",
                extra={"count": rows, "duration_s": round(time.perf_counter() - started, 2)},
            )
        # Compaction also folds new rows into existing indexes and drops old versions.
        table.optimize(cleanup_older_than=timedelta(seconds=self.config.keep_versions_s))
        self._rebuild_fragmented_index(table)

    def _rebuild_fragmented_index(self, table: Any) -> None:
        """Each optimize appends an index segment; searching 46 of them took 26 ms against
        10 ms for one (100k rows), so past a few segments the index is rebuilt whole."""
        for index in table.list_indices():
            if tuple(index.columns) != ("vector",):
                continue
            segments = getattr(table.index_stats(index.name), "num_indices", 1) or 1
            if segments > self.config.vector_index_max_segments:
                started = time.perf_counter()
                create_vector_index(table, self.config.vector_index_type)
                log.info(
                    "vector index rebuilt",
                    extra={
                        "count": segments,
                        "duration_s": round(time.perf_counter() - started, 2),
                    },
                )
