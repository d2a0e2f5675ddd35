"""The speaches server (github.com/speaches-ai/speaches) as a benchmark peer, offline, our weights.

speaches is not on PyPI and needs Python 3.12; bench/README.md ("The speaches peer") lists the
steps that install it from a source tree into its own virtual environment. Nothing here imports
it: the server runs as a subprocess of that environment's uvicorn, with its documented serve
command (`uvicorn --factory speaches.main:create_app`) from the source tree (it reads
`model_aliases.json` and `realtime-console/dist` relative to the working directory).

speaches resolves every model by Hugging Face id, only from the Hub cache: the transcription
route reads the repo's model card (README.md) there to pick an executor, and faster-whisper's
`WhisperModel(model_id)` finds the snapshot through huggingface_hub with `HF_HUB_OFFLINE=1`. So
`hub_cache` lays out a private cache under `HF_HOME` whose one repo, `Systran/faster-whisper-base`
(the repo these same weights are published as), links to SkyHigh's CTranslate2 directory and
carries a minimal model card (library `ctranslate2`, task `automatic-speech-recognition`).

Everything else is speaches' default, as its users run it: its own Silero VAD pass
(`DEFAULT_VAD_OPTIONS`: threshold 0.5, 160 ms minimum silence, 30 s chunks), then
`BatchedInferencePipeline` (beam 5) on the merged chunks. One setting is given:
`WHISPER__COMPUTE_TYPE=int8`, because the weights are stored in float16 and speaches' default
(`default`: the stored type) would run them in float32 on a CPU; the comparison is int8 on both.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Final

MODEL_ID: Final = "Systran/faster-whisper-base"
# Any 40-hex revision will do; the cache's refs/main points at it.
REVISION: Final = "0" * 39 + "1"
MODEL_CARD: Final = """---
library_name: ctranslate2
pipeline_tag: automatic-speech-recognition
tags:
- audio
- automatic-speech-recognition
license: mit
---

Whisper base in CTranslate2 format: SkyHigh's bundled weights, linked for the benchmark.
"""
# The files faster-whisper loads from a CTranslate2 directory (preprocessor_config is optional).
CT2_FILES: Final = ("config.json", "model.bin", "tokenizer.json", "vocabulary.txt")


def hub_cache(hf_home: Path, ct2_dir: Path, model_id: str = MODEL_ID) -> Path:
    """Lay out a Hugging Face cache under `hf_home` whose `model_id` is `ct2_dir`; the hub dir."""
    hub = hf_home / "hub"
    repo = hub / f"models--{model_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    for name in CT2_FILES:
        (snapshot / name).symlink_to((ct2_dir / name).resolve())
    (snapshot / "README.md").write_text(MODEL_CARD)
    return hub


def environment(hf_home: Path) -> dict[str, str]:
    """speaches' settings for the run: offline, int8, no web UI, no telemetry."""
    return {
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "WHISPER__COMPUTE_TYPE": "int8",
        # The Gradio UI is a separate page; off, as speaches' docs suggest for a leaner server.
        "ENABLE_UI": "false",
        "LOG_LEVEL": "warning",
        "DO_NOT_TRACK": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYANNOTE_METRICS_ENABLED": "0",
    }


def command(python: str, port: int, host: str) -> list[str]:
    """speaches' documented serve command, run by the interpreter of its own environment."""
    factory = ["-m", "uvicorn", "--factory", "speaches.main:create_app"]
    return [python, *factory, "--host", host, "--port", str(port), "--no-access-log"]


def commit(source: Path) -> str | None:
    """The source tree's git commit, when it is a checkout; else what `COMMIT` in it says."""
    marker = source / "COMMIT"
    if marker.is_file():
        return marker.read_text().strip() or None
    try:
        out = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
