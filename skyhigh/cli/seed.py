"""Rebuild the demo knowledge base: `python -m skyhigh.cli.seed [--source data/knowledge.jsonl]`."""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb
import pyarrow as pa

from skyhigh.config import get_settings
from skyhigh.domain.payloads import DocumentPayload
from skyhigh.knowledge.documents import document_rows, embedding_texts
from skyhigh.knowledge.embedder import Embedder, load_embedder
from skyhigh.knowledge.tables import create_text_index, documents_schema

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


def build(source: Path, uri: str, table: str, embedder: Embedder) -> int:
    """Replace `table` with the entries of `source`, FTS index built."""
    rows = entry_rows(load_entries(source), embedder)
    db = lancedb.connect(uri)
    data = pa.Table.from_pylist(rows, schema=documents_schema(embedder.dimension))
    handle = db.create_table(table, data=data, mode="overwrite")
    create_text_index(handle)
    # A fresh table keeps no old versions: the committed lancedb_data/ stays small.
    handle.optimize(cleanup_older_than=timedelta(0))
    return len(rows)


def main() -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--uri", default=settings.lancedb_uri)
    parser.add_argument("--table", default=settings.knowledge_table)
    args = parser.parse_args()
    started = time.perf_counter()
    embedder = load_embedder(settings.knowledge, cache_dir=settings.model_cache_dir)
    count = build(args.source, args.uri, args.table, embedder)
    elapsed = time.perf_counter() - started
    print(f"built {args.table!r} in {args.uri}: {count} entries in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
