"""Bulk-load documents: `python -m skyhigh.cli.ingest FILE.jsonl|DIR [--table T]`.

JSONL lines are document payloads (`{document_id?, title, text, metadata?}`) or entries of the
demo corpus (`{id, title, text, category, tags}`, data/knowledge.jsonl; tags are not loaded); a
directory contributes every .txt and .md file (id = relative path, title = file name). Resumable:
each chunk row records its document's content hash, so a re-run skips documents already
loaded unchanged and replaces changed ones, wherever the last run stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from skyhigh.config import Settings, get_settings
from skyhigh.domain.payloads import DocumentPayload, document_sha256
from skyhigh.knowledge.chunking import chunk_text
from skyhigh.knowledge.documents import document_rows, embed_chunks
from skyhigh.knowledge.embedder import load_embedder
from skyhigh.knowledge.search import KnowledgeBase
from skyhigh.knowledge.seeding import entry_document
from skyhigh.knowledge.storage import open_knowledge_base
from skyhigh.knowledge.writer import KnowledgeWriter, WriteOp, WriterConfig


def read_documents(source: Path) -> Iterator[DocumentPayload]:
    if source.is_dir():
        for path in sorted(p for p in source.rglob("*") if p.suffix in {".txt", ".md"}):
            text = path.read_text(encoding="utf-8", errors="replace").strip()
            if text:
                document_id = path.relative_to(source).as_posix()
                yield DocumentPayload(document_id=document_id, title=path.stem, text=text)
        return
    with source.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            record: dict[str, Any] = json.loads(line)
            if "id" in record:  # no document payload has an `id`: a demo corpus entry
                yield entry_document(record)
                continue
            record.setdefault("document_id", f"{source.stem}-{number}")
            yield DocumentPayload.model_validate(record)


def loaded_hashes(kb: KnowledgeBase, table: str) -> dict[str, str]:
    """document_id -> content hash of what the table holds now."""
    if table not in kb.table_names():
        return {}
    rows = kb.table(table).search().select(["document_id", "content_sha256"]).to_arrow()
    return dict(
        zip(rows["document_id"].to_pylist(), rows["content_sha256"].to_pylist(), strict=True)
    )


def ingest(
    source: Path, *, table: str, settings: Settings, batch: int = 32, limit: int | None = None
) -> dict[str, int]:
    embedder = load_embedder(settings.knowledge, cache_dir=settings.model_cache_dir)
    kb = open_knowledge_base(settings.knowledge, table=table)
    writer = KnowledgeWriter(
        kb, WriterConfig.from_settings(settings.knowledge, dimension=embedder.dimension)
    )
    writer.start()
    done = loaded_hashes(kb, table)
    counts = {"documents": 0, "skipped": 0, "chunks": 0}
    pending: list[WriteOp] = []
    try:
        with tqdm(read_documents(source), unit="doc", desc=f"ingest → {table}") as progress:
            for document in progress:
                if limit is not None and counts["documents"] >= limit:
                    break
                assert document.document_id is not None
                if done.get(document.document_id) == document_sha256(document):
                    counts["skipped"] += 1
                    continue
                chunks = chunk_text(
                    document.text, size=settings.chunk_size, overlap=settings.chunk_overlap
                )
                rows = document_rows(document, chunks, embed_chunks(document, chunks, embedder))
                pending.append(WriteOp(table, "documents", rows, [document.document_id]))
                counts["documents"] += 1
                counts["chunks"] += len(rows)
                if len(pending) >= batch:
                    _flush(writer, pending)
        _flush(writer, pending)
        writer.upkeep_now().result()  # bulk write done: index and compact once
    finally:
        writer.stop()
    return counts


def _flush(writer: KnowledgeWriter, pending: list[WriteOp]) -> None:
    # Submitted together, the ops land in one commit; waiting makes progress durable.
    futures = [writer.submit(op) for op in pending]
    for future in futures:
        future.result()
    pending.clear()


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="a .jsonl file or a directory of .txt/.md")
    parser.add_argument("--table", default=settings.knowledge_table)
    parser.add_argument("--batch", type=int, default=32, help="documents per commit")
    parser.add_argument("--limit", type=int, help="stop after this many new documents")
    args = parser.parse_args(argv)
    if not args.source.exists():
        parser.error(f"{args.source} does not exist")
    started = time.perf_counter()
    counts = ingest(
        args.source, table=args.table, settings=settings, batch=args.batch, limit=args.limit
    )
    elapsed = time.perf_counter() - started
    print(
        f"loaded {counts['documents']} documents ({counts['chunks']} chunks), skipped "
        f"{counts['skipped']} unchanged, in {elapsed:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
