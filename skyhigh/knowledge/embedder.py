"""The embedder of a process, from one of two backends, loaded once.

- `torch`: sentence-transformers on PyTorch (skyhigh.knowledge.torch_embedder), the reference.
- `onnx`: the same model exported to ONNX and quantised to int8, run by ONNX Runtime with the
  `tokenizers` package (skyhigh.knowledge.onnx_embedder). About 4× faster per query on two cores,
  and it never imports torch (BENCHMARKS.md, Knowledge).

The backends import heavy libraries only when constructed, so choosing the onnx backend keeps
torch out of the process. The protocol itself is skyhigh.knowledge.embedding.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from skyhigh.knowledge.embedding import Embedder as Embedder
from skyhigh.knowledge.onnx_embedder import OnnxEmbedder
from skyhigh.knowledge.onnx_export import ensure_onnx_model
from skyhigh.knowledge.torch_embedder import TorchEmbedder

if TYPE_CHECKING:
    from skyhigh.config import KnowledgeSettings


def load_embedder(settings: KnowledgeSettings, *, cache_dir: Path) -> Embedder:
    """The configured backend with the configured model (`cache_dir` holds ONNX exports)."""
    if settings.embedding_backend == "onnx":
        model = ensure_onnx_model(settings.embedding_model, cache_dir=cache_dir)
        return OnnxEmbedder(settings.embedding_model, model, threads=settings.embedding_threads)
    return TorchEmbedder(settings.embedding_model)
