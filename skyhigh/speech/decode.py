"""Decoding audio files into what Whisper takes: 16 kHz mono float32 in [-1, 1].

Two decoders with one contract (AUDIO_DECODER): the ffmpeg command line, described here, and
PyAV (FFmpeg's libraries inside the `av` wheel, decode_pyav.py) where no ffmpeg is installed, as
in the slim image; `auto` picks the command line when ffmpeg and ffprobe are on PATH.

ffmpeg does the decoding, but only of audio containers on ACCEPTED_CONTAINERS: ffmpeg reads
whatever it is told to, and some of its demuxers open other files by name (an `ffconcat` script,
HLS playlists, image sequences). So every file is

* linked into a directory of its own, the working directory of ffmpeg, so a relative name in
  it resolves to nothing of ours;
* decoded by one ffmpeg run that may only pick a demuxer on the list (`-format_whitelist`,
  checked right after probing, before the demuxer opens anything) and read local files
  (`-protocol_whitelist file`); a demuxer off the list is reported by name. One process, not
  an ffprobe before it: each start of Debian's ffmpeg costs ~0.1 s of loading its libraries;
* given at most FFMPEG_TIMEOUT_S per ffmpeg/ffprobe run.

`probe_seconds` (intake's quota estimate) reads a declared duration with ffprobe under the
same whitelists.

Blocking (subprocesses): call it from a worker thread. Failures a client caused are
`StepFailed`: empty_audio, unsupported_audio, audio_too_long.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np

from skyhigh.domain.errors import Interrupted
from skyhigh.domain.events import ErrorCode, StepFailed
from skyhigh.speech.samples import SAMPLE_RATE as SAMPLE_RATE  # the rate callers get
from skyhigh.speech.samples import FloatArray

MIN_AUDIO_SECONDS = 0.1
DEFAULT_FFMPEG_TIMEOUT_S = 60.0

# ffmpeg demuxer names (a name matches a demuxer that lists it: "mov" is mov,mp4,m4a,3gp...).
ACCEPTED_CONTAINERS = (
    "wav", "w64", "mp3", "flac", "ogg", "mov", "matroska", "aac", "amr", "aiff", "caf",
)  # fmt: skip
_WHITELIST = ",".join(ACCEPTED_CONTAINERS)
ACCEPTED_HINT = (
    "WAV, MP3, FLAC, Ogg (Vorbis/Opus), M4A/MP4/MOV, WebM/Matroska, AAC, AMR, AIFF or CAF"
)
Decoder = Literal["auto", "ffmpeg", "pyav"]
_NOT_ON_WHITELIST = re.compile(rb"\[([A-Za-z0-9_,]+) @ 0x[0-9a-f]+\] Format not on whitelist")


def pick_decoder(decoder: Decoder) -> Literal["ffmpeg", "pyav"]:
    """The decoder `decoder` names; `auto`: the ffmpeg command line when ffmpeg and ffprobe are
    on PATH, else PyAV."""
    if decoder != "auto":
        return decoder
    return "ffmpeg" if shutil.which("ffmpeg") and shutil.which("ffprobe") else "pyav"


def load_audio(
    path: Path,
    *,
    max_seconds: float,
    timeout_s: float = DEFAULT_FFMPEG_TIMEOUT_S,
    decoder: Decoder = "auto",
) -> FloatArray:
    """Decode an audio file in an accepted container into 16 kHz mono float32 in [-1, 1].

    Decoding stops just past `max_seconds`, so an overlong file costs at most that much memory.
    `timeout_s` bounds the ffmpeg run (with PyAV: the whole decode). Raises
    empty_audio, unsupported_audio or audio_too_long.
    """
    if path.stat().st_size == 0:
        raise StepFailed(ErrorCode.EMPTY_AUDIO, "the audio file is empty (0 bytes)")
    with _private_copy(path) as private:
        if pick_decoder(decoder) == "pyav":
            from skyhigh.speech.decode_pyav import decode_pcm

            pcm = decode_pcm(
                private, _WHITELIST, ACCEPTED_HINT, limit_s=max_seconds + 1, timeout_s=timeout_s
            )
        else:
            pcm = _run_ffmpeg(private, limit_s=max_seconds + 1, timeout_s=timeout_s)
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


@contextmanager
def _private_copy(path: Path) -> Iterator[Path]:
    """`path` linked (or copied) alone into a fresh directory, removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix=".decode-", dir=path.parent))
    private = work / "input"
    try:
        try:
            os.link(path, private)  # same file system: no copy
        except OSError:
            shutil.copyfile(path, private)
        yield private
    finally:
        shutil.rmtree(work, ignore_errors=True)


def probe_seconds(
    path: Path, *, timeout_s: float = DEFAULT_FFMPEG_TIMEOUT_S, decoder: Decoder = "auto"
) -> float | None:
    """The duration a file declares, read by ffprobe (or PyAV) under the same whitelists as
    decoding; None when it declares none or is not accepted audio (decoding will say why). A
    header can lie: this is for estimates (quota holds), the decoded length is the truth."""
    if path.stat().st_size == 0:
        return None
    if pick_decoder(decoder) == "pyav":
        from skyhigh.speech.decode_pyav import probe_duration

        with _private_copy(path) as private:
            seconds = probe_duration(private, _WHITELIST, timeout_s=timeout_s)
        return seconds if seconds is not None and seconds < 1e7 else None
    # fmt: off
    command = [
        "ffprobe", "-hide_banner", "-loglevel", "error",
        "-protocol_whitelist", "file", "-format_whitelist", _WHITELIST,
        "-show_entries", "format=duration", "-of", "json", "file:input",
    ]
    # fmt: on
    with _private_copy(path) as private:
        try:
            result = _run(command, private, timeout_s=timeout_s)
        except StepFailed:
            return None
    try:
        seconds = float(json.loads(result.stdout)["format"]["duration"])
    except (ValueError, KeyError, TypeError):
        return None
    return seconds if result.returncode == 0 and 0 <= seconds < 1e7 else None


def _run_ffmpeg(path: Path, *, limit_s: float, timeout_s: float) -> bytes:
    # fmt: off
    command = [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "0",
        "-protocol_whitelist", "file", "-format_whitelist", _WHITELIST,
        "-i", f"file:{path.name}",
        "-t", f"{limit_s:.3f}",  # stop decoding just past the limit
        "-vn", "-f", "s16le", "-ac", "1", "-acodec", "pcm_s16le", "-ar", str(SAMPLE_RATE), "-",
    ]
    # fmt: on
    result = _run(command, path, timeout_s=timeout_s)
    if result.returncode == 0:
        return result.stdout
    refused = _NOT_ON_WHITELIST.search(result.stderr)
    if refused is not None:
        found = refused.group(1).decode()
        raise StepFailed(
            ErrorCode.UNSUPPORTED_AUDIO,
            f"the file is in the {found!r} format, which is not accepted; "
            f"send audio as {ACCEPTED_HINT}",
        )
    raise StepFailed(
        ErrorCode.UNSUPPORTED_AUDIO,
        f"could not decode the audio ({_last_line(result.stderr, path)}); "
        f"send audio as {ACCEPTED_HINT}",
    )


def _run(command: list[str], path: Path, *, timeout_s: float) -> subprocess.CompletedProcess[bytes]:
    # cwd: the private directory, so any name a demuxer might open resolves there.
    try:
        result = subprocess.run(
            command, capture_output=True, check=False, cwd=path.parent, timeout=timeout_s
        )
    except FileNotFoundError:
        raise RuntimeError(f"{command[0]} is not installed or not on PATH") from None
    except subprocess.TimeoutExpired:  # run() has killed it
        raise StepFailed(
            ErrorCode.UNSUPPORTED_AUDIO,
            f"decoding the audio took longer than {timeout_s:g} s (FFMPEG_TIMEOUT_S); "
            f"send plain audio as {ACCEPTED_HINT}",
        ) from None
    if result.returncode < 0:  # stopped by a signal: not the audio's fault
        raise Interrupted(f"{command[0]} was stopped by signal {-result.returncode}")
    return result


def _last_line(stderr: bytes, path: Path) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    # Paths are server-internal; the client only needs the reason.
    if not lines:
        return "ffmpeg failed without a message"
    line = lines[-1].replace(f"file:{path.name}", "input").replace(str(path.parent), "")
    return re.sub(r"^\[[^\]]* @ 0x[0-9a-f]+\] ", "", line)
