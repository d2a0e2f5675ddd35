"""The reference embedding backend: sentence-transformers on PyTorch."""

from __future__ import annotations

import threading

import numpy as np
from numpy.typing import NDArray

from skyhigh.knowledge.embedding import Backend, resolve_embedding_model


class TorchEmbedder:
    """sentence-transformers with the model's own pooling and normalisation (see Embedder)."""

    backend: Backend = "torch"

    def __init__(self, name: str, *, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.path = resolve_embedding_model(name)
        self._model = SentenceTransformer(self.path, device=device)
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise ValueError(f"embedding model {name!r} does not report its dimension")
        self.dimension: int = int(dim)
        # Inference is cheap; one lock keeps torch from interleaving two batches badly.
        self._lock = threading.Lock()

    def embed(self, texts: list[str], *, batch_size: int = 64) -> NDArray[np.float32]:
        with self._lock:
            vectors = self._model.encode(
                texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
            )
        return np.asarray(vectors, dtype=np.float32)
