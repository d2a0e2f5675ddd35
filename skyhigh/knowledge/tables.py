"""The knowledge tables: their schemas, column sets, rows of transcripts, and indexes.

Two kinds of table live in the base:

- document tables (`knowledge` and any a document event names): shared by every principal;
  the fixed columns of `skyhigh.domain.payloads.DOCUMENT_COLUMNS` plus one column per
  metadata key;
- per-owner tables (the transcripts table): every row carries its owner (`owner`, the owner's
  namespace from skyhigh.domain.tenancy: a digest, never the `sub`), a search sees only the
  caller's rows (an admin's sees all), and the `id` column, unique across owners, is the
  storage key: what callers see as a match's id is the public `event_id`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
from lancedb.index import FTS, IvfFlat, IvfHnswSq, IvfPq, IvfSq
from numpy.typing import NDArray

from skyhigh.domain.events import Transcript
from skyhigh.domain.payloads import DOCUMENT_COLUMNS, LIST_COLUMNS
from skyhigh.domain.tenancy import STATIC_OWNER, key_namespace, public_event_id

log = logging.getLogger("skyhigh.knowledge.tables")

OWNER_COLUMN = "owner"
# Shown as a match's own fields (id, title, text), or internal: never in `metadata`, never
# filterable.
HIDDEN_COLUMNS = frozenset({"id", "title", "text", "vector", "content_sha256", OWNER_COLUMN})
# Columns a transcripts table has; one without `owner` predates per-owner rows, one without
# `speaker` predates diarization (the writer adds both when it opens the table).
TRANSCRIPT_COLUMNS = ("id", "event_id", "title", "text", "language", "created_at", "vector")
SPEAKER_COLUMN = "speaker"

_DOCUMENT_TYPES: dict[str, pa.DataType] = {
    "id": pa.string(),
    "document_id": pa.string(),
    "chunk": pa.int32(),
    "title": pa.string(),
    "text": pa.string(),
    "content_sha256": pa.string(),
}


def documents_schema(dimension: int) -> pa.Schema:
    """Chunks of documents: the fixed columns, then the demo's metadata (`category`) and list
    column (`tags`); more columns are added when documents bring new metadata keys."""
    fixed = [
        pa.field(name, pa.list_(pa.float32(), dimension))
        if name == "vector"
        else pa.field(name, _DOCUMENT_TYPES[name], nullable=name != "id")
        for name in DOCUMENT_COLUMNS
    ]
    demo = [pa.field("category", pa.string())]
    demo += [pa.field(name, pa.list_(pa.string())) for name in LIST_COLUMNS]
    return pa.schema(fixed[:-1] + demo + fixed[-1:])


def transcripts_schema(dimension: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("event_id", pa.string()),
            pa.field(OWNER_COLUMN, pa.string()),
            pa.field("title", pa.string()),
            pa.field("text", pa.string()),
            pa.field("language", pa.string()),
            pa.field(SPEAKER_COLUMN, pa.string()),
            pa.field("created_at", pa.timestamp("us", tz="UTC")),
            pa.field("vector", pa.list_(pa.float32(), dimension)),
        ]
    )


def transcript_row(
    key: str,
    *,
    text: str,
    language: str,
    vector: NDArray[np.float32],
    speaker: str | None = None,
    turn: int | None = None,
) -> dict[str, Any]:
    """The transcripts-table row of the event stored under `key`: its owner, and the public
    event id wherever a caller can see it (`id`, hidden, stays unique across owners).

    A diarized transcript has one row per speaker turn (`turn` 0, 1, ...), stored as
    `<key>#<turn>` (a `#` cannot occur in an event id); an undiarized one, one row, `<key>`.
    """
    event_id = public_event_id(key)
    return {
        "id": key if turn is None else f"{key}#{turn}",
        "event_id": event_id,
        OWNER_COLUMN: key_namespace(key),
        "title": f"Transcript of {event_id}",
        "text": text,
        "language": language,
        SPEAKER_COLUMN: speaker,
        "created_at": datetime.now(UTC),
        "vector": vector.tolist(),
    }


def speaker_turns(transcript: Transcript) -> list[tuple[str, str]]:
    """A diarized transcript's turns, `(speaker, text)`: consecutive segments of one speaker
    joined, so each indexed row holds one speaker's words. Empty for an undiarized one."""
    turns: list[tuple[str, str]] = []
    for segment in transcript.segments:
        text = segment.text.strip()
        if segment.speaker is None or not text:
            continue
        if turns and turns[-1][0] == segment.speaker:
            turns[-1] = (segment.speaker, f"{turns[-1][1]} {text}")
        else:
            turns.append((segment.speaker, text))
    return turns


def is_transcripts(schema: pa.Schema) -> bool:
    return all(name in schema.names for name in TRANSCRIPT_COLUMNS)


def is_owned(schema: pa.Schema) -> bool:
    """Rows belong to their owners (a transcripts table, migrated or not)."""
    return OWNER_COLUMN in schema.names or is_transcripts(schema)


def public_id_column(schema: pa.Schema) -> str:
    """The column a match's `id` comes from."""
    return "event_id" if is_owned(schema) else "id"


def filterable_columns(schema: pa.Schema) -> list[str]:
    return [name for name in schema.names if name not in HIDDEN_COLUMNS]


def adopt_legacy_transcripts(table: Any) -> bool:
    """Give rows written before per-owner rows their owner, and their public event id.

    Those rows hold the storage key in `id`, `event_id` and `title`; the key names its owner
    (`<digest>~<event id>`, or a bare id for the static principal), so every old row gets its
    true owner back and nobody else's rows are exposed. Idempotent; writer thread only.
    Returns whether the table changed.
    """
    if OWNER_COLUMN in table.schema.names:
        return False
    table.add_columns(pa.field(OWNER_COLUMN, pa.string()))
    # Every value is computed from `id`, which keeps the key: the SET expressions of one
    # update may see each other's results, so none may read a column this update rewrites.
    public = "split_part(id, '~', 2)"
    table.update(
        where="strpos(id, '~') > 0",
        values_sql={
            OWNER_COLUMN: "split_part(id, '~', 1)",
            "event_id": public,
            "title": f"concat('Transcript of ', {public})",
        },
    )
    table.update(where=f"{OWNER_COLUMN} IS NULL", values_sql={OWNER_COLUMN: f"'{STATIC_OWNER}'"})
    log.info("transcripts re-keyed to their owners", extra={"count": table.count_rows()})
    return True


def add_speaker_column(table: Any) -> bool:
    """A transcripts table from before diarization gets its (empty) `speaker` column, so a
    `speaker` filter works on it and its old rows simply match no speaker. Writer thread only;
    returns whether the table changed."""
    if SPEAKER_COLUMN in table.schema.names:
        return False
    table.add_columns(pa.field(SPEAKER_COLUMN, pa.string()))
    return True


# --------------------------------------------------------------------------- indexes

VECTOR_INDEX_CONFIGS = {
    "IVF_HNSW_SQ": IvfHnswSq,
    "IVF_PQ": IvfPq,
    "IVF_FLAT": IvfFlat,
    "IVF_SQ": IvfSq,
}


def create_text_index(table: Any) -> None:
    """The BM25 index behind fulltext and hybrid search (LanceDB's native FTS), with word
    positions: a quoted query ("checked bags") is a phrase search, which needs them."""
    table.create_index("text", config=FTS(with_position=True), replace=True)


def create_vector_index(table: Any, index_type: str) -> None:
    config = VECTOR_INDEX_CONFIGS[index_type](distance_type="cosine")
    table.create_index("vector", config=config, replace=True)


def text_index(table: Any) -> Any | None:
    """The table's full-text index, if it has one."""
    for index in table.list_indices():
        if tuple(index.columns) == ("text",):
            return index
    return None


def has_positions(index: Any) -> bool:
    details = getattr(index, "index_details", None) or {}
    return bool(details.get("with_position"))


def describe_table(name: str, table: Any, embedding_model: str) -> dict[str, Any]:
    """A table with its row count, indexes and the embedding model that fills it."""
    indexes = []
    for index in table.list_indices():
        stats = table.index_stats(index.name)
        indexes.append(
            {
                "name": index.name,
                "type": str(index.index_type),
                "columns": list(index.columns),
                "indexed_rows": getattr(stats, "num_indexed_rows", None),
                "unindexed_rows": getattr(stats, "num_unindexed_rows", None),
            }
        )
    return {
        "name": name,
        "rows": table.count_rows(),
        "version": table.version,
        "indexes": indexes,
        "embedding_model": embedding_model,
        "columns": [n for n in table.schema.names if n not in ("vector", OWNER_COLUMN)],
    }
