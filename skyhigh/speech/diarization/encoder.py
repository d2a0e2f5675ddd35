"""Speaker embeddings: the GE2E encoder whose weights ship in the `resemblyzer` wheel.

Chosen over the other wheels that mention speaker embeddings (speakeronnx, redimnet2-onnx,
wespeakerruntime, anime-speaker-embedding, diarize): those download their weights from a model
hub at first use, which fails where SkyHigh runs; resemblyzer's wheel carries `pretrained.pt`
(17 MB). The package itself is never imported (it would pull librosa and webrtcvad, declared away
in pyproject.toml): the state dict is read from its file, checksum-verified, into the small module
below (3-layer LSTM over 40 mel bands, a linear layer, ReLU, L2 norm: 256-dim embeddings).

Two interchangeable encoders: `TorchSpeakerEncoder` (the original network) and, in onnx_model,
`OnnxSpeakerEncoder` (its export, the default: no torch at run time). Both take audio windows and
return unit vectors; the features (features.mel_frames) are shared.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from skyhigh.speech.diarization.features import (
    N_MELS,
    FloatArray,
    frame_count,
    mel_frames,
    normalize_volume,
)
from skyhigh.speech.weights import verify_sha256

WEIGHTS_PACKAGE: Final = "resemblyzer"
WEIGHTS_FILE: Final = "pretrained.pt"
# SHA-256 of resemblyzer 0.1.4's pretrained.pt: a different file is refused, not embedded with.
WEIGHTS_SHA256: Final = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"
HIDDEN: Final = 256
EMBEDDING_DIM: Final = 256
LAYERS: Final = 3
BATCH: Final = 32

Embeddings = npt.NDArray[np.float32]


class SpeakerModelError(Exception):
    """The speaker model cannot be found, verified or exported (the message says what to do)."""


class SpeakerEncoder(Protocol):
    """Maps audio windows (16 kHz mono float32) to L2-normalised speaker embeddings.

    A second implementation only needs `embed`; rows follow the input order. Windows may differ
    in length (each is at least a few hundred milliseconds of speech).
    """

    name: str

    def embed(self, windows: list[FloatArray]) -> Embeddings: ...


def bundled_weights() -> Path:
    """pretrained.pt inside the installed resemblyzer package, verified; without importing it."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / WEIGHTS_FILE
        if path.is_file():
            verify_sha256(path, WEIGHTS_SHA256)
            return path
    raise SpeakerModelError(
        f"the speaker model needs {WEIGHTS_PACKAGE}'s {WEIGHTS_FILE}, and {WEIGHTS_PACKAGE} is "
        "not installed here: install it, or use DIARIZATION_BACKEND=onnx with an export made "
        "where it is (python -m skyhigh.cli.export_speaker_onnx)"
    )


def features_batch(windows: list[FloatArray]) -> list[FloatArray]:
    """Each window's mel frames, after the volume normalisation the encoder was trained with."""
    return [mel_frames(normalize_volume(window)) for window in windows]


def same_length_batches(windows: list[FloatArray]) -> Iterator[tuple[list[int], FloatArray]]:
    """(window indices, their stacked mel frames) per batch of windows of one frame count, so
    each runs without padding (padding would run through the LSTM and change the final state).
    Features are made batch by batch: a 10-minute clip's ~750 windows at once held ~20 MB more.
    At most BATCH windows per run: the LSTM keeps every step's gates for the whole batch, and
    one batch of a 10-minute clip's ~750 windows peaked at +750 MB RSS."""
    groups: dict[int, list[int]] = {}
    for index, window in enumerate(windows):
        groups.setdefault(frame_count(len(window)), []).append(index)
    for indices in groups.values():
        for i in range(0, len(indices), BATCH):
            batch = indices[i : i + BATCH]
            yield batch, np.stack(features_batch([windows[j] for j in batch]))


def build_torch_module() -> Any:
    """The GE2E network with the bundled weights loaded (needs torch)."""
    import torch

    class VoiceEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
            self.linear = torch.nn.Linear(HIDDEN, EMBEDDING_DIM)

        def forward(self, mels: Any) -> Any:
            _, (hidden, _) = self.lstm(mels)
            raw = torch.relu(self.linear(hidden[-1]))
            return raw / torch.linalg.vector_norm(raw, dim=1, keepdim=True).clamp(min=1e-12)

    module = VoiceEncoder()
    checkpoint = torch.load(bundled_weights(), map_location="cpu", weights_only=True)
    # The GE2E loss's similarity scale and bias are training-only; every other key must match.
    state = {k: v for k, v in checkpoint["model_state"].items() if not k.startswith("similarity")}
    module.load_state_dict(state, strict=True)
    return module.eval()


class TorchSpeakerEncoder:
    """The original network, run by torch (DIARIZATION_BACKEND=torch; the export's reference)."""

    name = "resemblyzer-ge2e"

    def __init__(self) -> None:
        self._module = build_torch_module()

    def embed(self, windows: list[FloatArray]) -> Embeddings:
        import torch

        out = np.zeros((len(windows), EMBEDDING_DIM), dtype=np.float32)
        with torch.inference_mode():
            for indices, batch in same_length_batches(windows):
                out[indices] = self._module(torch.from_numpy(batch)).numpy()
        return out
