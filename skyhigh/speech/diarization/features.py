"""The speaker encoder's input: a 40-band mel power spectrogram, in numpy.

The bundled GE2E encoder was trained on librosa's `melspectrogram` (25 ms Hann window, 10 ms hop,
Slaney mel scale and area normalisation, power 2, not log) of clips normalised to -30 dBFS. The
same computation is written out here so neither librosa (numba, llvmlite) nor torch is needed to
make the features: the torch and ONNX encoders share them, and only the network differs.
"""

from __future__ import annotations

from functools import cache
from typing import Final

import numpy as np
import numpy.typing as npt

from skyhigh.speech.samples import SAMPLE_RATE, FloatArray

__all__ = ["N_MELS", "SAMPLE_RATE", "FloatArray", "frame_count", "mel_frames", "normalize_volume"]

N_FFT: Final = 400  # 25 ms
HOP: Final = 160  # 10 ms
N_MELS: Final = 40
TARGET_DBFS: Final = -30.0


def normalize_volume(audio: FloatArray) -> FloatArray:
    """Scale to -30 dBFS RMS, as in training (silence is left as it is)."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if len(audio) else 0.0
    if rms < 1e-6:
        return audio
    gain = 10 ** (TARGET_DBFS / 20) / rms
    return (audio * gain).astype(np.float32)


def frame_count(samples: int) -> int:
    """How many frames mel_frames gives for a clip of `samples` samples."""
    return max(0, 1 + (samples + 2 * (N_FFT // 2) - N_FFT) // HOP)


def mel_frames(audio: FloatArray) -> FloatArray:
    """(frames, 40) mel power spectrogram of 16 kHz audio, one frame per 10 ms (centred)."""
    padded = np.pad(audio.astype(np.float32), N_FFT // 2)
    count = frame_count(len(audio))
    if count <= 0:
        return np.zeros((0, N_MELS), dtype=np.float32)
    index = np.arange(N_FFT)[None, :] + HOP * np.arange(count)[:, None]
    spectrum = np.abs(np.fft.rfft(padded[index] * _hann(), axis=1)) ** 2
    return (spectrum @ _mel_filters().T).astype(np.float32)


@cache
def _hann() -> npt.NDArray[np.float64]:
    # Periodic Hann, as librosa's STFT uses (scipy.signal.get_window("hann", N_FFT)).
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    # Slaney: linear below 1 kHz, logarithmic above.
    mel = hz / (200.0 / 3)
    log_part = hz >= 1000.0
    mel[log_part] = 15.0 + np.log(hz[log_part] / 1000.0) / (np.log(6.4) / 27.0)
    return mel


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    hz = mel * (200.0 / 3)
    log_part = mel >= 15.0
    hz[log_part] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel[log_part] - 15.0))
    return hz


@cache
def _mel_filters() -> npt.NDArray[np.float64]:
    """(40, 201) triangular filters with Slaney area normalisation (librosa.filters.mel)."""
    fft_freqs = np.linspace(0, SAMPLE_RATE / 2, 1 + N_FFT // 2)
    edges = _mel_to_hz(
        np.linspace(0.0, float(_hz_to_mel(np.array([SAMPLE_RATE / 2]))[0]), N_MELS + 2)
    )
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights
