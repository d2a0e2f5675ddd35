"""Where the API process's memory goes: RSS after each import and model load, step by step.

    uv run python -m bench.speech_rss_probe openai-whisper
    uv run python -m bench.speech_rss_probe faster-whisper

Prints VmRSS / VmHWM / RssAnon / RssFile (MiB) after importing torch, fastapi, whisper,
faster-whisper, sentence-transformers and lancedb, loading MiniLM and the `base` Whisper model,
and (openai-whisper) after gc + malloc_trim, which shows what the load left behind in the heap.
"""

from __future__ import annotations

import ctypes
import gc
import sys
from pathlib import Path

FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")


def mem(label: str) -> None:
    values: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in FIELDS:
            values[key] = int(rest.split()[0]) // 1024
    print(f"{label:32s} " + "  ".join(f"{k} {values[k]:5d}" for k in FIELDS), flush=True)


def main() -> None:
    engine = sys.argv[1] if len(sys.argv) > 1 else "openai-whisper"
    mem("start")
    import torch

    mem(f"import torch {torch.__version__}")
    import fastapi  # noqa: F401

    mem("import fastapi")
    import whisper

    mem("import whisper")
    import faster_whisper

    mem("import faster_whisper")
    import sentence_transformers  # noqa: F401

    mem("import sentence_transformers")
    import lancedb  # noqa: F401

    mem("import lancedb")
    from skyhigh.knowledge.torch_embedder import TorchEmbedder as Embedder
    from skyhigh.speech.weights import resolve_whisper_model

    embedder = Embedder("all-MiniLM-L6-v2")
    embedder.embed(["warm up"])
    mem("MiniLM loaded + one embed")
    cache = Path.home() / ".cache" / "skyhigh"
    resolved = resolve_whisper_model("base", engine=engine, cache_dir=cache)
    if engine == "openai-whisper":
        model = whisper.load_model(str(resolved.checkpoint), device="cpu")
        mem("whisper.load_model(base)")
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        mem("gc + malloc_trim")
        size = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
        print(f"parameters: {size:.0f} MiB")
    else:
        faster_whisper.WhisperModel(
            str(resolved.ct2_dir), device="cpu", compute_type="int8", cpu_threads=0, num_workers=1
        )
        mem("WhisperModel(base, int8)")


if __name__ == "__main__":
    main()
