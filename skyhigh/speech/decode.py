"""Decoding audio files into what Whisper takes: 16 kHz mono float32 in [-1, 1].

ffmpeg does the decoding, so anything it reads is accepted (WAV, MP3, Ogg/Opus, WebM, the audio
track of a video...). Blocking (a subprocess): call it from a worker thread. Failures a client
caused are `StepFailed`: empty_audio, unsupported_audio, audio_too_long.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt

from skyhigh.domain.events import ErrorCode, StepFailed

SAMPLE_RATE = 16_000
MIN_AUDIO_SECONDS = 0.1

FloatArray = npt.NDArray[np.float32]


def load_audio(path: Path, *, max_seconds: float) -> FloatArray:
    """Decode anything ffmpeg reads into 16 kHz mono float32 in [-1, 1].

    Decoding stops just past `max_seconds`, so an overlong file costs at most that much memory.
    Raises empty_audio, unsupported_audio or audio_too_long.
    """
    if path.stat().st_size == 0:
        raise StepFailed(ErrorCode.EMPTY_AUDIO, "the audio file is empty (0 bytes)")
    pcm = _run_ffmpeg(path, limit_s=max_seconds + 1)
    samples = np.frombuffer(pcm, np.int16).astype(np.float32) / 32768.0
    if len(samples) < MIN_AUDIO_SECONDS * SAMPLE_RATE:
        raise StepFailed(
            ErrorCode.EMPTY_AUDIO,
            f"the audio holds {len(samples) / SAMPLE_RATE:.3f} s of sound; "
            f"at least {MIN_AUDIO_SECONDS} s is needed",
        )
    if len(samples) > max_seconds * SAMPLE_RATE:
        raise StepFailed(
            ErrorCode.AUDIO_TOO_LONG,
            f"the audio is longer than {max_seconds:g} s (MAX_AUDIO_SECONDS): split it",
        )
    return samples


def _run_ffmpeg(path: Path, *, limit_s: float) -> bytes:
    # fmt: off
    command = [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "0",
        "-i", str(path),
        "-t", f"{limit_s:.3f}",  # stop decoding just past the limit
        "-vn", "-f", "s16le", "-ac", "1", "-acodec", "pcm_s16le", "-ar", str(SAMPLE_RATE), "-",
    ]
    # fmt: on
    try:
        result = subprocess.run(command, capture_output=True, check=False)
    except FileNotFoundError:
        raise RuntimeError("ffmpeg is not installed or not on PATH") from None
    if result.returncode != 0:
        raise StepFailed(
            ErrorCode.UNSUPPORTED_AUDIO,
            f"could not decode the audio: {_last_line(result.stderr, path)}",
        )
    return result.stdout


def _last_line(stderr: bytes, path: Path) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    # The spool path is server-internal; the client only needs the reason.
    return lines[-1].replace(str(path), "input") if lines else "ffmpeg failed without a message"
