"""The speaker encoder as ONNX: exported once (needs torch + onnx), cached, run torch-free.

The export lands in `<cache_dir>/speaker-onnx/<weights sha256>-<RECIPE>/` with a manifest of
digests, like the embedding model's (skyhigh.knowledge.onnx_export): a deployment without torch
finds it there by the pinned weights checksum, without the weights package. It stays float32
(17 MB): the LSTM is small, and quantising its gates buys little time for lost agreement. An export
is refused unless its embeddings of real speech windows reach MIN_COSINE to torch's.

    model = ensure_speaker_onnx(cache_dir=Path("~/.cache/skyhigh"))
    encoder = OnnxSpeakerEncoder(model)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from skyhigh.durable_files import fsync_dir, sha256_file
from skyhigh.speech.diarization.encoder import (
    EMBEDDING_DIM,
    WEIGHTS_SHA256,
    Embeddings,
    SpeakerModelError,
    build_torch_module,
    features_batch,
    same_length_batches,
)
from skyhigh.speech.diarization.features import N_MELS, FloatArray

# Part of the cache key: change it whenever the export below would produce a different model.
RECIPE: Final = "ge2e-fp32-v1"
MIN_COSINE: Final = 0.99
_OPSET: Final = 17


@dataclass(frozen=True, kw_only=True)
class SpeakerOnnxModel:
    directory: Path
    sha256: str  # of model.onnx
    min_cosine_to_torch: float

    @property
    def model_path(self) -> Path:
        return self.directory / "model.onnx"


def export_dir(cache_dir: Path) -> Path:
    return cache_dir / "speaker-onnx" / f"{WEIGHTS_SHA256}-{RECIPE}"


def find_speaker_onnx(*, cache_dir: Path) -> SpeakerOnnxModel | None:
    """The cached export, if complete and undamaged."""
    directory = export_dir(cache_dir)
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    model = directory / "model.onnx"
    if not model.is_file() or sha256_file(model) != manifest["sha256"]:
        return None
    return SpeakerOnnxModel(
        directory=directory,
        sha256=manifest["sha256"],
        min_cosine_to_torch=float(manifest["min_cosine_to_torch"]),
    )


def ensure_speaker_onnx(
    *, cache_dir: Path, check_windows: list[FloatArray] | None = None
) -> SpeakerOnnxModel:
    """The cached export, exporting it first when there is none (which needs torch + onnx)."""
    found = find_speaker_onnx(cache_dir=cache_dir)
    if found is not None:
        return found
    try:
        import onnx  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise SpeakerModelError(
            f"no ONNX export of the speaker model in {export_dir(cache_dir)}, and this "
            f"environment cannot make one ({exc.name} is not installed): run `python -m "
            "skyhigh.cli.export_speaker_onnx` where torch is installed, with the same "
            "MODEL_CACHE_DIR"
        ) from exc
    return export_speaker_onnx(cache_dir=cache_dir, check_windows=check_windows)


def export_speaker_onnx(
    *, cache_dir: Path, check_windows: list[FloatArray] | None = None
) -> SpeakerOnnxModel:
    """Export, check against torch on `check_windows` (default: built-in real speech) and cache."""
    final = export_dir(cache_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        module = build_torch_module()
        _export(module, work / "model.onnx")
        windows = check_windows if check_windows is not None else _default_check_windows()
        worst = _check_against_torch(module, work / "model.onnx", windows)
        manifest = {
            "recipe": RECIPE,
            "source_sha256": WEIGHTS_SHA256,
            "sha256": sha256_file(work / "model.onnx"),
            "min_cosine_to_torch": round(worst, 5),
            "check_windows": len(windows),
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        for path in work.iterdir():
            path.chmod(0o644)  # the cache is shared with the service user
            with path.open("rb") as f:
                os.fsync(f.fileno())
        work.chmod(0o755)
        fsync_dir(work)
        if find_speaker_onnx(cache_dir=cache_dir) is None:
            shutil.rmtree(final, ignore_errors=True)  # damaged
            try:
                os.rename(work, final)
            except OSError:  # a concurrent exporter renamed its copy into place first
                if not final.is_dir():
                    raise
            fsync_dir(final.parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    found = find_speaker_onnx(cache_dir=cache_dir)
    assert found is not None  # just published
    return found


def _export(module: Any, out: Path) -> None:
    import torch

    sample = torch.zeros((2, 160, N_MELS), dtype=torch.float32)
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter handles the LSTM with no extra packages (torch warns that it
        # is deprecated, and about the LSTM's batch size while tracing).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (sample,),
            str(out),
            dynamo=False,
            input_names=["mels"],
            output_names=["embedding"],
            dynamic_axes={"mels": {0: "batch", 1: "frames"}, "embedding": {0: "batch"}},
            opset_version=_OPSET,
        )


def _default_check_windows() -> list[FloatArray]:
    """Deterministic noise windows of several lengths and levels: the service has no speech
    clips to check with, and these catch a graph that computes something else. Agreement on real
    speech is checked in tests/test_diarization.py (the same MIN_COSINE)."""
    rng = np.random.default_rng(0)
    return [
        (rng.standard_normal(int(16_000 * seconds)) * level).astype(np.float32)
        for seconds, level in ((1.6, 0.05), (1.6, 0.3), (0.8, 0.1), (2.4, 0.02))
    ]


def _check_against_torch(module: Any, model_path: Path, windows: list[FloatArray]) -> float:
    import torch

    reference = np.zeros((len(windows), EMBEDDING_DIM), dtype=np.float32)
    features = features_batch(windows)
    with torch.inference_mode():
        for i, frames in enumerate(features):
            reference[i] = module(torch.from_numpy(frames[None])).numpy()[0]
    exported = OnnxSpeakerEncoder.from_path(model_path).embed(windows)
    worst = float(np.min(np.sum(reference * exported, axis=1)))
    if worst < MIN_COSINE:
        raise SpeakerModelError(
            f"the ONNX speaker encoder reaches cosine {worst:.4f} to torch, below {MIN_COSINE}; "
            "not cached"
        )
    return worst


class OnnxSpeakerEncoder:
    """The exported encoder run by ONNX Runtime (the default backend; no torch needed)."""

    name = "resemblyzer-ge2e"

    def __init__(self, model: SpeakerOnnxModel, *, threads: int = 1) -> None:
        self._session = self._open(model.model_path, threads)

    @classmethod
    def from_path(cls, path: Path, *, threads: int = 1) -> OnnxSpeakerEncoder:
        encoder = cls.__new__(cls)
        encoder._session = cls._open(path, threads)
        return encoder

    @staticmethod
    def _open(path: Path, threads: int) -> object:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle pool threads would otherwise spin after each call, taking CPU from Whisper.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # No arena and no memory pattern: buffers go back after each batch instead of staying
        # reserved at the largest batch's size (peak RSS on the 10-minute benchmark recording
        # 87 -> 76 MB above the transcriber, no time lost; BENCHMARKS.md "Speech: diarization").
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def embed(self, windows: list[FloatArray]) -> Embeddings:
        out = np.zeros((len(windows), EMBEDDING_DIM), dtype=np.float32)
        for indices, batch in same_length_batches(windows):
            out[indices] = self._session.run(None, {"mels": batch})[0]  # type: ignore[attr-defined]
        return out
