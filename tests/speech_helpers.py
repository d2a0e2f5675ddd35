"""Helpers for speech tests: reference text, WER, synthesized speech, ffprobe."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import jiwer

DATA = Path(__file__).resolve().parent / "data"


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9' ]", " ", text.lower())).strip()


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalise(reference), normalise(hypothesis)))


def jfk_reference() -> str:
    return (DATA / "jfk.txt").read_text().strip()


def ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly, overwriting the output; fails the test on an ffmpeg error."""
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def synthesize(text: str, dest: Path) -> Path:
    """Speak `text` with espeak-ng and resample to 16 kHz mono WAV with ffmpeg."""
    raw = dest.with_suffix(".raw.wav")
    # The Klatt voice: espeak's default voice blurs the /b/ of "bags" into "mags" for Whisper.
    voice = ["-v", "en-us+klatt", "-s", "140"]
    subprocess.run(["espeak-ng", *voice, "-w", str(raw), text], check=True)
    ffmpeg("-i", str(raw), "-ar", "16000", "-ac", "1", str(dest))
    raw.unlink()
    return dest


def probe_duration_s(path: Path) -> float | None:
    """The container's declared duration in seconds, or None when ffprobe cannot tell."""
    # fmt: off
    command = [
        "ffprobe", "-v", "error", "-show_entries", "format=duration",
        "-of", "default=noprint_wrappers=1:nokey=1", str(path),
    ]
    # fmt: on
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        return float(result.stdout.strip())
    except ValueError:  # "N/A" or nothing
        return None


def tone(dest: Path, seconds: float, codec_args: tuple[str, ...] = ()) -> Path:
    source = f"sine=frequency=440:duration={seconds}"
    ffmpeg("-f", "lavfi", "-i", source, "-ar", "16000", "-ac", "1", *codec_args, str(dest))
    return dest
