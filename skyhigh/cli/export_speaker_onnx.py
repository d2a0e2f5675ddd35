"""Export the speaker model to ONNX: `python -m skyhigh.cli.export_speaker_onnx [--cache-dir D]`.

Needs torch and onnx (`uv run --group export ...`; the dev install has them) and the resemblyzer
wheel that carries the weights. The export lands in MODEL_CACHE_DIR (or --cache-dir), keyed by the
weights' pinned checksum, where diarization finds it torch-free: run it once where torch is
installed and copy or mount that directory into a torch-free deployment. An intact cached export
is reused, unless --force.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

from skyhigh.config import get_settings
from skyhigh.speech.diarization.onnx_model import (
    export_dir,
    export_speaker_onnx,
    find_speaker_onnx,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache-dir", type=Path, default=get_settings().model_cache_dir)
    parser.add_argument("--force", action="store_true", help="export again even if cached")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    model = None if args.force else find_speaker_onnx(cache_dir=args.cache_dir)
    if model is None:
        shutil.rmtree(export_dir(args.cache_dir), ignore_errors=True)
        model = export_speaker_onnx(cache_dir=args.cache_dir)
    print(
        f"{model.directory}: model.onnx {model.model_path.stat().st_size / 1e6:.1f} MB, "
        f"cosine to torch ≥ {model.min_cosine_to_torch}, {time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
