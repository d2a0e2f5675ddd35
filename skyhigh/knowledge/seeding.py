"""The demo knowledge base: data/knowledge.jsonl embedded into the default table.

`python -m skyhigh.cli.seed` builds it on demand (a local directory or a bucket);
`SEED_EMPTY_KNOWLEDGE=true` builds it when a process that loads the models starts and finds
no default table (a fresh bucket), see `seed_if_empty`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import lancedb
import pyarrow as pa

from skyhigh.domain.payloads import DocumentPayload
from skyhigh.knowledge.documents import document_rows, embedding_texts
from skyhigh.knowledge.embedder import Embedder
from skyhigh.knowledge.search import KnowledgeBase
from skyhigh.knowledge.tables import create_text_index, documents_schema

log = logging.getLogger("skyhigh.knowledge.seeding")

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "data" / "knowledge.jsonl"


def load_entries(source: Path) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    ids = [entry["id"] for entry in entries]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{source}: duplicate ids")
    return entries


def entry_document(entry: dict[str, Any]) -> DocumentPayload:
    """A corpus entry as the document it stands for, so that seed, ingest and a `document` event
    store the same rows (`document_rows`: same ids, same content hash), and
    `skyhigh.cli.ingest` of this corpus skips what is loaded unchanged.

    Tags are a list, which document metadata cannot hold: they stay outside the hash (and
    ingest does not load them).
    """
    return DocumentPayload(
        document_id=entry["id"],
        title=entry["title"],
        text=entry["text"],
        metadata={"category": entry["category"]},
    )


def entry_rows(entries: list[dict[str, Any]], embedder: Embedder) -> list[dict[str, Any]]:
    """One chunk per entry (entries are passage-sized), embedded in one batch."""
    documents = [entry_document(entry) for entry in entries]
    texts = [text for document in documents for text in embedding_texts(document, [document.text])]
    vectors = embedder.embed(texts)
    return [
        row
        for index, (entry, document) in enumerate(zip(entries, documents, strict=True))
        for row in document_rows(
            document,
            [document.text],
            vectors[index : index + 1],
            extra={"tags": list(entry["tags"])},
        )
    ]


def build(
    source: Path,
    uri: str,
    table: str,
    embedder: Embedder,
    *,
    storage_options: Mapping[str, str] | None = None,
    mode: Literal["overwrite", "create"] = "overwrite",
) -> int:
    """Write `table` from the entries of `source`, FTS index built; the number of rows.

    `mode="create"` fails (ValueError) if the table exists, whoever made it meanwhile.
    """
    rows = entry_rows(load_entries(source), embedder)
    db = lancedb.connect(uri, storage_options=dict(storage_options or {}))
    data = pa.Table.from_pylist(rows, schema=documents_schema(embedder.dimension))
    handle = db.create_table(table, data=data, mode=mode)
    create_text_index(handle)
    if mode == "overwrite":
        # A rebuilt table keeps no old versions: the committed lancedb_data/ stays small. Not
        # when seeding a base others may be opening (create): their view must stay readable.
        handle.optimize(cleanup_older_than=timedelta(0))
    return len(rows)


def seed_if_empty(
    kb: KnowledgeBase,
    embedder: Embedder,
    *,
    storage_options: Mapping[str, str] | None = None,
    source: Path = DEFAULT_SOURCE,
) -> int:
    """Build the demo table if the base has no default table; the rows written (0: none).

    Workers of a fleet may start together on one empty bucket: the table is created only if
    absent, so one of them seeds it and the others find it there.
    """
    if kb.default_table in kb.table_names():
        return 0
    started = time.perf_counter()
    try:
        count = build(
            source,
            kb.uri,
            kb.default_table,
            embedder,
            storage_options=storage_options,
            mode="create",
        )
    except ValueError:
        if kb.default_table in kb.table_names():
            return 0  # another process seeded it first
        raise
    log.info(
        "empty knowledge base seeded",
        extra={"count": count, "duration_s": round(time.perf_counter() - started, 2)},
    )
    return count
