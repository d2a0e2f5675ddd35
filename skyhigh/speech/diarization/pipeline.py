"""Who spoke when: speech regions -> overlapping windows -> embeddings -> clusters -> turns.

Engine-independent: the input is the clip (16 kHz mono float32) and the speech regions the VAD
found; the output is speaker turns, which assign.py maps onto any engine's segments and words.

    diarizer = Diarizer(OnnxSpeakerEncoder(ensure_speaker_onnx(cache_dir=cache)))
    turns = diarizer.diarize(audio, regions, hints=SpeakerHints(max_speakers=4))
    # [Turn(start=0.4, end=5.2, speaker="SPEAKER_00"), Turn(start=6.0, ..., "Alice"), ...]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from skyhigh.speech.diarization.clustering import (
    DEFAULT_KNOWN_THRESHOLD,
    DEFAULT_THRESHOLD,
    SpeakerHints,
    centroids,
    cluster_windows,
    name_clusters,
)
from skyhigh.speech.diarization.encoder import Embeddings, SpeakerEncoder
from skyhigh.speech.samples import SAMPLE_RATE, FloatArray

# The encoder's training partials were 1.6 s; half-window hops give each instant two votes.
WINDOW_S: Final = 1.6
HOP_S: Final = 0.8
# Shorter speech than this says too little about the voice to embed; it takes its neighbours'.
MIN_WINDOW_S: Final = 0.4
FRAME_S: Final = 0.01
# A turn shorter than this between two turns of the same speaker is taken as clustering noise.
MIN_TURN_S: Final = 1.0
# Frames matched to their nearest window at once, when frames no window covers are labelled.
NEAREST_BLOCK: Final = 1024


@dataclass(frozen=True)
class Turn:
    start: float
    end: float
    speaker: str


@dataclass(frozen=True)
class KnownSpeaker:
    """A speaker the caller can name, with a short clip of their voice (16 kHz mono float32)."""

    name: str
    audio: FloatArray


@dataclass(frozen=True, kw_only=True)
class DiarizationOptions:
    threshold: float = DEFAULT_THRESHOLD
    known_threshold: float = DEFAULT_KNOWN_THRESHOLD


class Diarizer:
    """Diarizes clips with one speaker encoder (thread-safe if the encoder is)."""

    def __init__(self, encoder: SpeakerEncoder, options: DiarizationOptions | None = None) -> None:
        self.encoder = encoder
        self.options = options or DiarizationOptions()

    def diarize(
        self,
        audio: FloatArray,
        regions: Sequence[tuple[float, float]],
        *,
        hints: SpeakerHints | None = None,
        known_speakers: Sequence[KnownSpeaker] = (),
    ) -> list[Turn]:
        """Speaker turns over `regions` (seconds), in time order; [] when there is no speech."""
        spans = speech_windows(regions, duration_s=len(audio) / SAMPLE_RATE)
        if not spans:
            return []
        embeddings = self.encoder.embed([_cut(audio, start, end) for start, end in spans])
        labels = cluster_windows(
            embeddings, hints=hints or SpeakerHints(), threshold=self.options.threshold
        )
        references = [(k.name, self.reference_embedding(k.audio)) for k in known_speakers]
        names = name_clusters(
            centroids(embeddings, labels), references, threshold=self.options.known_threshold
        )
        frame_labels = _vote(spans, labels.tolist(), regions)
        return _turns(frame_labels, names)

    def reference_embedding(self, audio: FloatArray) -> Embeddings:
        """A known speaker's voice: the mean embedding of the loud windows of their clip."""
        duration = len(audio) / SAMPLE_RATE
        spans = speech_windows([(0.0, duration)], duration_s=duration) or [(0.0, duration)]
        windows = [_cut(audio, start, end) for start, end in spans]
        loudness = np.array([float(np.sqrt(np.mean(np.square(w)))) + 1e-9 for w in windows])
        loud = [w for w, rms in zip(windows, loudness, strict=True) if rms > loudness.max() / 30]
        mean = self.encoder.embed(loud).mean(axis=0)
        return np.asarray(mean / max(float(np.linalg.norm(mean)), 1e-12), dtype=np.float32)


def speech_windows(
    regions: Sequence[tuple[float, float]], *, duration_s: float
) -> list[tuple[float, float]]:
    """Windows of WINDOW_S every HOP_S over each region (the last one ends with the region); a
    region shorter than a window is one window of its own length."""
    windows: list[tuple[float, float]] = []
    for raw_start, raw_end in regions:
        start, end = max(0.0, raw_start), min(duration_s, raw_end)
        length = end - start
        if length < MIN_WINDOW_S:
            continue
        if length <= WINDOW_S:
            windows.append((start, end))
            continue
        count = int(np.ceil((length - WINDOW_S) / HOP_S)) + 1
        for index in range(count):
            window_start = min(start + index * HOP_S, end - WINDOW_S)
            windows.append((window_start, window_start + WINDOW_S))
    return windows


def _cut(audio: FloatArray, start: float, end: float) -> FloatArray:
    return audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]


def _vote(
    spans: list[tuple[float, float]], labels: list[int], regions: Sequence[tuple[float, float]]
) -> npt.NDArray[np.int64]:
    """A label per 10 ms frame (-1 outside the regions): the label of the windows covering it,
    a tie going to the window whose centre is nearest; frames no window covers (a region too
    short to embed) take the nearest window's label."""
    frame_count = int(np.ceil(max(end for _, end in regions) / FRAME_S)) + 1
    times = (np.arange(frame_count) + 0.5) * FRAME_S
    votes = np.zeros((max(labels) + 1, frame_count))
    for (start, end), label in zip(spans, labels, strict=True):
        first, last = int(start / FRAME_S), int(np.ceil(end / FRAME_S))
        centre = (start + end) / 2
        votes[label, first:last] += 1.0 + 1e-3 * (1.0 - np.abs(times[first:last] - centre))
    frame_labels: npt.NDArray[np.int64] = np.asarray(np.argmax(votes, axis=0), dtype=np.int64)
    inside = np.zeros(frame_count, dtype=bool)
    for start, end in regions:
        inside[int(max(start, 0.0) / FRAME_S) : int(np.ceil(end / FRAME_S))] = True
    # Only the uncovered frames inside the regions need a nearest window, and they are taken a
    # block at a time: all of a long clip's pauses against all its windows at once (frames x
    # windows, float64) was the largest allocation of diarizing (BENCHMARKS.md).
    uncovered = np.flatnonzero(inside & (votes.max(axis=0) == 0))
    centres = np.array([(start + end) / 2 for start, end in spans])
    for block in range(0, len(uncovered), NEAREST_BLOCK):
        frames = uncovered[block : block + NEAREST_BLOCK]
        nearest = np.argmin(np.abs(times[frames, None] - centres[None, :]), axis=1)
        frame_labels[frames] = np.asarray(labels)[nearest]
    frame_labels[~inside] = -1
    return frame_labels


def _turns(frame_labels: npt.NDArray[np.int64], names: list[str]) -> list[Turn]:
    """Contiguous frames of one label become a turn; a short turn between two turns of the same
    speaker (with no pause between) is absorbed by them."""
    runs: list[list[int]] = []  # [first frame, end frame, label]
    for frame, label in enumerate(frame_labels.tolist()):
        if runs and runs[-1][2] == label and runs[-1][1] == frame:
            runs[-1][1] = frame + 1
        else:
            runs.append([frame, frame + 1, label])
    runs = [run for run in runs if run[2] >= 0]
    min_frames = int(MIN_TURN_S / FRAME_S)
    for i in range(1, len(runs) - 1):
        before, run, after = runs[i - 1], runs[i], runs[i + 1]
        adjacent = before[1] == run[0] and run[1] == after[0]
        if adjacent and before[2] == after[2] != run[2] and run[1] - run[0] < min_frames:
            run[2] = before[2]
    merged: list[list[int]] = []
    for run in runs:
        if merged and merged[-1][2] == run[2] and merged[-1][1] == run[0]:
            merged[-1][1] = run[1]
        else:
            merged.append(list(run))
    return [
        Turn(round(first * FRAME_S, 2), round(end * FRAME_S, 2), names[label])
        for first, end, label in merged
    ]
