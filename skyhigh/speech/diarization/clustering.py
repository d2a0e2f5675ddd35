"""Window embeddings -> speaker clusters, and clusters -> known speakers' names.

Agglomerative clustering with average linkage on cosine distance: merging stops when the two
closest clusters are less similar than `threshold` (calibrated on the test conversations; see
BENCHMARKS.md "Speech: diarization"), unless the hints ask for another count. Each window is then
moved to its nearest cluster centroid once, which fixes windows that average linkage merged early
through a noisy neighbour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from skyhigh.speech.diarization.encoder import Embeddings

Labels = npt.NDArray[np.int64]

# Cosine similarity above which two GE2E clusters are the same voice. On the test conversations
# (tests/conversations.py; Silero regions) every count is right from 0.60 to 0.70 (telephone band:
# one speaker below 0.60; three voices: four speakers from 0.72): the middle of that range.
DEFAULT_THRESHOLD: Final = 0.65
# A cluster of fewer windows than this (3 windows: about 3 s of speech; in long recordings 2 % of
# the windows) is taken as stray windows of the others: a cough, laughter, a noisy stretch. On the
# 10-minute benchmark recording a third cluster appeared with the absolute minimum alone. A
# caller who expects such a brief speaker says so with hints.
MIN_CLUSTER_WINDOWS: Final = 3
MIN_CLUSTER_SHARE: Final = 0.02
# A known speaker's reference must be at least this similar to a cluster to name it.
DEFAULT_KNOWN_THRESHOLD: Final = 0.70


@dataclass(frozen=True, kw_only=True)
class SpeakerHints:
    """What the caller knows about the number of speakers (None: estimate it)."""

    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_speakers", "min_speakers", "max_speakers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.min_speakers and self.max_speakers and self.min_speakers > self.max_speakers:
            raise ValueError(
                f"min_speakers ({self.min_speakers}) is above max_speakers ({self.max_speakers})"
            )


def cluster_windows(embeddings: Embeddings, *, hints: SpeakerHints, threshold: float) -> Labels:
    """A cluster label per window (0, 1, ... in order of first appearance)."""
    count = len(embeddings)
    if count <= 1:
        return np.zeros(count, dtype=np.int64)
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(embeddings.astype(np.float64), method="average", metric="cosine")
    labels = _in_order_of_appearance(fcluster(tree, t=1.0 - threshold, criterion="distance"))
    sizes = np.bincount(labels)
    big = np.flatnonzero(sizes >= max(MIN_CLUSTER_WINDOWS, MIN_CLUSTER_SHARE * count))
    if len(big) == 0:
        big = np.arange(len(sizes))
    wanted = _wanted_count(len(big), count, hints)
    if wanted == len(big):
        # Windows of the small clusters go to the nearest big one.
        nearest = np.argmax(embeddings @ centroids(embeddings, labels)[big].T, axis=1)
        labels = _in_order_of_appearance(big[nearest])
    else:
        labels = _in_order_of_appearance(fcluster(tree, t=wanted, criterion="maxclust"))
    return _reassign_to_centroids(embeddings, labels)


def _wanted_count(estimated: int, windows: int, hints: SpeakerHints) -> int:
    if hints.num_speakers is not None:
        return min(hints.num_speakers, windows)
    wanted = estimated
    if hints.min_speakers is not None:
        wanted = max(wanted, hints.min_speakers)
    if hints.max_speakers is not None:
        wanted = min(wanted, hints.max_speakers)
    return min(wanted, windows)


def centroids(embeddings: Embeddings, labels: Labels) -> Embeddings:
    """Unit-length mean embedding of each label 0..max."""
    rows = [embeddings[labels == label].mean(axis=0) for label in range(int(labels.max()) + 1)]
    stacked = np.stack(rows).astype(np.float32)
    norms = np.maximum(np.linalg.norm(stacked, axis=1, keepdims=True), 1e-12)
    return np.asarray(stacked / norms, dtype=np.float32)


def _reassign_to_centroids(embeddings: Embeddings, labels: Labels) -> Labels:
    dense = _in_order_of_appearance(labels)
    moved = np.argmax(embeddings @ centroids(embeddings, dense).T, axis=1).astype(np.int64)
    # A cluster that lost every window would leave a gap in the numbering; keep the count.
    return (
        _in_order_of_appearance(moved) if len(np.unique(moved)) == len(np.unique(dense)) else dense
    )


def _in_order_of_appearance(labels: npt.NDArray[np.integer]) -> Labels:
    mapping: dict[int, int] = {}
    for label in labels.tolist():
        mapping.setdefault(int(label), len(mapping))
    return np.array([mapping[int(label)] for label in labels.tolist()], dtype=np.int64)


def name_clusters(
    cluster_centroids: Embeddings,
    known: Sequence[tuple[str, Embeddings]],
    *,
    threshold: float = DEFAULT_KNOWN_THRESHOLD,
) -> list[str]:
    """A name per cluster: the best-matching known speaker above `threshold` (each name used
    once, best pairs first), else the generic SPEAKER_NN."""
    names = [f"SPEAKER_{index:02d}" for index in range(len(cluster_centroids))]
    if not known or len(cluster_centroids) == 0:
        return names
    references = np.stack([reference for _, reference in known])
    similarity = cluster_centroids @ references.T
    taken_clusters: set[int] = set()
    taken_names: set[int] = set()
    for flat in np.argsort(-similarity, axis=None).tolist():
        cluster, reference = divmod(int(flat), len(known))
        if similarity[cluster, reference] < threshold:
            break
        if cluster in taken_clusters or reference in taken_names:
            continue
        names[cluster] = known[reference][0]
        taken_clusters.add(cluster)
        taken_names.add(reference)
    return names
