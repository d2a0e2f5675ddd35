"""A document payload turned into knowledge-table rows: chunked, embedded, fingerprinted.

Shared by the `document` event handler, the bulk `ingest` command and `seed`, so all three
store exactly the same rows (same ids, same vectors, same content hash).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from skyhigh.domain.events import ErrorCode, StepFailed
from skyhigh.domain.payloads import DOCUMENT_COLUMNS, DocumentPayload, document_sha256
from skyhigh.knowledge.embedding import Embedder


def check_metadata_columns(
    columns: Collection[str], keys: Iterable[str], *, max_columns: int, table: str
) -> None:
    """Refuse metadata that would give `table` more than `max_columns` metadata columns.

    Checked twice: at intake against the table as it is (a 422 before the 202), and by the
    writer as it adds the columns (the authority: two documents may pass intake together).
    """
    existing = {name for name in columns if name not in DOCUMENT_COLUMNS}
    new = set(keys) - existing
    if new and len(existing) + len(new) > max_columns:
        raise StepFailed(
            ErrorCode.METADATA_COLUMN_LIMIT,
            f"table {table!r} has {len(existing)} metadata columns and this document would add "
            f"{len(new)} more; the limit is {max_columns} (KNOWLEDGE_MAX_METADATA_COLUMNS): "
            "reuse existing metadata keys",
        )


def embedding_texts(document: DocumentPayload, chunks: list[str]) -> list[str]:
    # The title travels with every chunk: it often carries the chunk's topic.
    return [f"{document.title}\n{chunk}" for chunk in chunks]


def embed_chunks(
    document: DocumentPayload, chunks: list[str], embedder: Embedder
) -> NDArray[np.float32]:
    return embedder.embed(embedding_texts(document, chunks))


def document_rows(
    document: DocumentPayload,
    chunks: list[str],
    vectors: NDArray[np.float32],
    *,
    extra: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One row per chunk; ids `<document_id>#<n>` (a `#` cannot occur in a document id).

    `extra` holds columns outside the document's metadata and its hash (the demo corpus's
    `tags` list), the same on every chunk.
    """
    assert document.document_id is not None  # intake (or ingest) fills it in
    digest = document_sha256(document)
    return [
        {
            **document.metadata,
            **(extra or {}),
            "id": f"{document.document_id}#{index}",
            "document_id": document.document_id,
            "chunk": index,
            "title": document.title,
            "text": chunk,
            "content_sha256": digest,
            "vector": vector.tolist(),
        }
        for index, (chunk, vector) in enumerate(zip(chunks, vectors, strict=True))
    ]
