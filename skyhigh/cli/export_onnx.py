"""Export the embedding model to int8 ONNX: `python -m skyhigh.cli.export_onnx [--model M]`.

Needs torch, transformers and onnx (`uv run --group export ...`; the dev install has them). The
export lands in MODEL_CACHE_DIR (or --cache-dir), keyed by the weights' checksum, where a service
with EMBEDDING_BACKEND=onnx finds it, torch or not: run it once where torch is installed and copy
or mount that directory into a torch-free deployment (the slim Docker image does this at build).
An export that is already cached and intact is reused, unless --force.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

from skyhigh.config import get_settings
from skyhigh.knowledge.onnx_export import export_onnx_model
from skyhigh.knowledge.onnx_model import export_dir, find_onnx_model, weights_sha256


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=settings.embedding_model, help="EMBEDDING_MODEL")
    parser.add_argument("--cache-dir", type=Path, default=settings.model_cache_dir)
    parser.add_argument("--force", action="store_true", help="export again even if cached")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    source_sha256 = weights_sha256(args.model)
    model = None if args.force else find_onnx_model(source_sha256, cache_dir=args.cache_dir)
    if model is None:
        if args.force:
            shutil.rmtree(export_dir(source_sha256, args.cache_dir), ignore_errors=True)
        model = export_onnx_model(args.model, cache_dir=args.cache_dir)
    manifest = json.loads((model.directory / "manifest.json").read_text())
    print(
        f"{model.directory}: model.onnx {model.model_path.stat().st_size / 1e6:.1f} MB, "
        f"cosine to torch ≥ {manifest['min_cosine_to_torch']}, "
        f"{time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
