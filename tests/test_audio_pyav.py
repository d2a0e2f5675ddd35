"""Decoding with PyAV (AUDIO_DECODER=pyav, and `auto` where no ffmpeg is installed, as in the
slim image): real speech in every accepted family of containers gives the samples the ffmpeg
command line gives, with the same refusals and limits."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from skyhigh.domain.events import ErrorCode, StepFailed
from skyhigh.speech.decode import SAMPLE_RATE, load_audio, pick_decoder, probe_seconds
from tests.speech_helpers import DATA, ffmpeg


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """JFK's real speech re-encoded as a client might send it (44.1 kHz stereo for AAC)."""
    work = tmp_path_factory.mktemp("encoded")
    jfk = str(DATA / "jfk.wav")
    files = {
        "wav": DATA / "jfk.wav",
        "flac": DATA / "sonnet1.flac",
        "mp3": work / "jfk.mp3",
        "m4a": work / "jfk.m4a",
        "ogg": work / "jfk.ogg",
        "webm": work / "jfk.webm",
    }
    ffmpeg("-i", jfk, str(files["mp3"]))
    ffmpeg("-i", jfk, "-ar", "44100", "-ac", "2", str(files["m4a"]))
    ffmpeg("-i", jfk, "-c:a", "libopus", str(files["ogg"]))
    ffmpeg("-i", jfk, "-c:a", "libopus", str(files["webm"]))
    return files


@pytest.fixture
def without_ffmpeg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """PATH holds no ffmpeg or ffprobe, and no subprocess may run (the slim image)."""
    monkeypatch.setenv("PATH", str(tmp_path))

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a subprocess ran: {args}")

    monkeypatch.setattr(subprocess, "run", refused)


def best_correlation(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any], max_lag: int) -> float:
    """The highest normalised correlation of `a` and `b` over shifts up to `max_lag` samples
    (FFmpeg versions differ in how much encoder delay they trim from lossy streams)."""
    n = min(len(a), len(b)) - max_lag
    best = -1.0
    for lag in range(-max_lag, max_lag + 1):
        x = a[max(lag, 0) : max(lag, 0) + n]
        y = b[max(-lag, 0) : max(-lag, 0) + n]
        best = max(best, float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y))))
    return best


@pytest.mark.parametrize("kind", ["wav", "flac"])
def test_pyav_decodes_lossless_speech_bit_for_bit(encoded: dict[str, Path], kind: str) -> None:
    expected = load_audio(encoded[kind], max_seconds=120, decoder="ffmpeg")
    samples = load_audio(encoded[kind], max_seconds=120, decoder="pyav")
    assert samples.dtype == np.float32 and samples.ndim == 1
    np.testing.assert_array_equal(samples, expected)
    assert probe_seconds(encoded[kind], decoder="pyav") == probe_seconds(encoded[kind])


@pytest.mark.parametrize("kind", ["mp3", "m4a", "ogg", "webm"])
def test_pyav_decodes_lossy_speech_as_ffmpeg_does(encoded: dict[str, Path], kind: str) -> None:
    expected = load_audio(encoded[kind], max_seconds=120, decoder="ffmpeg")
    samples = load_audio(encoded[kind], max_seconds=120, decoder="pyav")
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - len(expected)) <= 0.02 * SAMPLE_RATE
    assert 0.1 < float(np.abs(samples).max()) <= 1.0
    assert best_correlation(samples, expected, max_lag=int(0.02 * SAMPLE_RATE)) > 0.98
    # FFmpeg 5 (Debian) and PyAV's newer libraries count encoder padding differently.
    assert probe_seconds(encoded[kind], decoder="pyav") == pytest.approx(
        probe_seconds(encoded[kind], decoder="ffmpeg"), abs=0.1
    )


@pytest.mark.usefixtures("without_ffmpeg")
def test_auto_decodes_with_pyav_where_no_ffmpeg_is_installed(encoded: dict[str, Path]) -> None:
    assert pick_decoder("auto") == "pyav"
    samples = load_audio(encoded["m4a"], max_seconds=60)
    assert len(samples) / SAMPLE_RATE == pytest.approx(11.0, abs=0.05)
    assert probe_seconds(encoded["flac"]) == pytest.approx(53.27, abs=0.01)


def test_auto_prefers_the_ffmpeg_command_line_when_installed() -> None:
    assert pick_decoder("auto") == "ffmpeg"  # this machine has ffmpeg (scripts/dev.sh)
    assert pick_decoder("pyav") == "pyav"


@pytest.mark.usefixtures("without_ffmpeg")
def test_pyav_stops_just_past_the_limit(encoded: dict[str, Path]) -> None:
    with pytest.raises(StepFailed) as caught:
        load_audio(encoded["flac"], max_seconds=5)  # 53 s of speech
    assert caught.value.code == ErrorCode.AUDIO_TOO_LONG


@pytest.mark.usefixtures("without_ffmpeg")
def test_pyav_refuses_text_without_naming_paths(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("these are not the samples you are looking for\n" * 20)
    with pytest.raises(StepFailed) as caught:
        load_audio(path, max_seconds=60)
    assert caught.value.code == ErrorCode.UNSUPPORTED_AUDIO
    assert str(tmp_path) not in caught.value.message
    assert probe_seconds(path) is None


@pytest.mark.usefixtures("without_ffmpeg")
def test_pyav_refuses_demuxers_that_open_other_files(tmp_path: Path) -> None:
    """An ffconcat script naming a real file must not be followed: the concat demuxer is not on
    the list, so nothing of the named file is read."""
    script = tmp_path / "upload.wav"
    script.write_text(f"ffconcat version 1.0\nfile '{DATA / 'jfk.wav'}'\n")
    with pytest.raises(StepFailed) as caught:
        load_audio(script, max_seconds=60)
    assert caught.value.code == ErrorCode.UNSUPPORTED_AUDIO
    assert "accepted" in caught.value.message and os.fspath(DATA) not in caught.value.message
