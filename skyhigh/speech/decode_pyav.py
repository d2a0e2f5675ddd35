"""Decoding with PyAV: FFmpeg's libraries inside the `av` wheel (faster-whisper installs it).

The same contract and the same guards as the ffmpeg command line in decode.py, for an
installation without Debian's ffmpeg (the slim image): the file is opened through the `file`
protocol only, libavformat may pick only a demuxer on ACCEPTED_CONTAINERS (`format_whitelist`,
checked before the demuxer opens anything), the caller has linked it alone into a directory of
its own, decoding stops just past the limit, and the wall clock is bounded twice: PyAV's own
open/read timeout, and `timeout_s` checked between packets. Corrupt packets are skipped, as the
command line does.

The result is what the command line produces: 16 kHz mono signed 16-bit samples (the resampler
is FFmpeg's swresample in both).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from skyhigh.domain.events import ErrorCode, StepFailed
from skyhigh.speech.samples import SAMPLE_RATE


def _open(path: Path, whitelist: str, *, timeout_s: float) -> Any:
    import av

    options = {"protocol_whitelist": "file", "format_whitelist": whitelist}
    return av.open(f"file:{path}", mode="r", container_options=options, timeout=timeout_s)


def _refusal(exc: Exception, hint: str) -> StepFailed:
    # strerror only: the exception's text names the server-internal path.
    if getattr(exc, "errno", None) == 22:  # EINVAL: the probed format is not on the list
        return StepFailed(
            ErrorCode.UNSUPPORTED_AUDIO,
            f"the file is not in an accepted audio format; send audio as {hint}",
        )
    reason = getattr(exc, "strerror", None) or "the decoder failed without a message"
    return StepFailed(
        ErrorCode.UNSUPPORTED_AUDIO, f"could not decode the audio ({reason}); send audio as {hint}"
    )


def decode_pcm(path: Path, whitelist: str, hint: str, *, limit_s: float, timeout_s: float) -> bytes:
    """The first audio stream of `path` as 16 kHz mono s16le bytes, up to about `limit_s`."""
    import av

    deadline = time.monotonic() + timeout_s
    try:
        container = _open(path, whitelist, timeout_s=timeout_s)
    except (av.FFmpegError, OSError) as exc:
        raise _refusal(exc, hint) from None
    with container:
        if not container.streams.audio:
            raise StepFailed(
                ErrorCode.UNSUPPORTED_AUDIO, f"the file holds no audio; send audio as {hint}"
            )
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        chunks: list[np.ndarray[Any, Any]] = []  # s16 samples, as the resampler was told
        wanted = int(limit_s * SAMPLE_RATE)
        have = 0
        try:
            for packet in container.demux(stream):
                if time.monotonic() > deadline:
                    raise StepFailed(
                        ErrorCode.UNSUPPORTED_AUDIO,
                        f"decoding the audio took longer than {timeout_s:g} s "
                        f"(FFMPEG_TIMEOUT_S); send plain audio as {hint}",
                    )
                try:
                    frames = packet.decode()  # the last, empty packet flushes the decoder
                except av.InvalidDataError:  # a corrupt packet: skipped, as ffmpeg does
                    continue
                for frame in frames:
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1))
                        have += out.samples
                if have >= wanted:
                    break
            else:
                chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
        except av.FFmpegError as exc:
            raise _refusal(exc, hint) from None
    return np.concatenate(chunks)[:wanted].tobytes() if chunks else b""


def probe_duration(path: Path, whitelist: str, *, timeout_s: float) -> float | None:
    """The duration the container declares, under the same whitelists; None when it declares
    none or cannot be opened."""
    import av

    try:
        with _open(path, whitelist, timeout_s=timeout_s) as container:
            duration = container.duration  # microseconds (AV_TIME_BASE), or None
    except (av.FFmpegError, OSError):
        return None
    return None if duration is None or duration < 0 else duration / 1_000_000
