"""A document payload turned into knowledge-table rows: chunked, embedded, fingerprinted.

Shared by the `document` event handler and the bulk `ingest` command, so both store
exactly the same rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from skyhigh.domain.payloads import DocumentPayload, document_sha256
from skyhigh.knowledge.embedder import Embedder


def embed_chunks(
    document: DocumentPayload, chunks: list[str], embedder: Embedder
) -> NDArray[np.float32]:
    # The title travels with every chunk: it often carries the chunk's topic.
    return embedder.embed([f"{document.title}\n{chunk}" for chunk in chunks])


def document_rows(
    document: DocumentPayload, chunks: list[str], vectors: NDArray[np.float32]
) -> list[dict[str, Any]]:
    """One row per chunk; ids `<document_id>#<n>` (a `#` cannot occur in a document id)."""
    assert document.document_id is not None  # intake (or ingest) fills it in
    digest = document_sha256(document)
    return [
        {
            **document.metadata,
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
