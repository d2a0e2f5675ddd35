"""Speaker turns -> speakers on transcript segments and words, by their timestamps.

Works on any engine's output: segments need `start`, `end`, `text` and optional `words` (each
with `start`, `end`, `word`), as skyhigh.domain.events.Segment and both engines' chunk segments
have. A segment whose words belong to more than one speaker is split at each change, between two
words, so no piece of text is attributed to someone who did not say it.

    pieces = assign_speakers(transcript.segments, turns)
    # [SpeakerSegment(start=0.0, end=4.1, text="...", speaker="SPEAKER_00", words=[...]), ...]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from skyhigh.speech.diarization.pipeline import Turn


class TimedWord(Protocol):
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def word(self) -> str: ...


class TimedSegment(Protocol):
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def text(self) -> str: ...
    @property
    def words(self) -> Sequence[TimedWord] | None: ...


@dataclass(frozen=True)
class SpeakerWord:
    start: float
    end: float
    word: str
    speaker: str | None


@dataclass(frozen=True)
class SpeakerSegment:
    """A segment (or the piece of one) spoken by one speaker; `source` is the index of the
    segment it came from, so callers can carry over the engine's other fields."""

    start: float
    end: float
    text: str
    speaker: str | None
    source: int
    words: list[SpeakerWord] = field(default_factory=list)


def speaker_at(turns: Sequence[Turn], start: float, end: float) -> str | None:
    """The speaker who talks most within [start, end]; if no turn overlaps it, the nearest
    turn's (Whisper's times can fall in the pause just before or after a turn); None: no turns."""
    if not turns:
        return None
    overlap: dict[str, float] = {}
    for turn in turns:
        shared = min(end, turn.end) - max(start, turn.start)
        if shared > 0:
            overlap[turn.speaker] = overlap.get(turn.speaker, 0.0) + shared
    if overlap:
        return max(overlap, key=overlap.__getitem__)
    middle = (start + end) / 2
    nearest = min(turns, key=lambda t: max(t.start - middle, middle - t.end, 0.0))
    return nearest.speaker


def assign_speakers(
    segments: Sequence[TimedSegment], turns: Sequence[Turn]
) -> list[SpeakerSegment]:
    """Each segment with its speaker, split where its words change speaker."""
    out: list[SpeakerSegment] = []
    for index, segment in enumerate(segments):
        words = [
            SpeakerWord(w.start, w.end, w.word, speaker_at(turns, w.start, w.end))
            for w in segment.words or ()
        ]
        if not words:
            speaker = speaker_at(turns, segment.start, segment.end)
            out.append(SpeakerSegment(segment.start, segment.end, segment.text, speaker, index))
            continue
        out.extend(_split_at_changes(segment, words, index))
    return out


def _split_at_changes(
    segment: TimedSegment, words: list[SpeakerWord], index: int
) -> list[SpeakerSegment]:
    groups: list[list[SpeakerWord]] = []
    for word in words:
        if groups and groups[-1][-1].speaker == word.speaker:
            groups[-1].append(word)
        else:
            groups.append([word])
    if len(groups) == 1:
        return [
            SpeakerSegment(segment.start, segment.end, segment.text, words[0].speaker, index, words)
        ]
    pieces = []
    for position, group in enumerate(groups):
        # The first piece keeps the segment's start, the last its end; the cut between two
        # pieces lies at the word boundary.
        start = segment.start if position == 0 else group[0].start
        end = segment.end if position == len(groups) - 1 else group[-1].end
        text = "".join(word.word for word in group).strip()
        pieces.append(SpeakerSegment(start, end, text, group[0].speaker, index, group))
    return pieces


def talk_time(turns: Sequence[Turn]) -> dict[str, float]:
    """Seconds each speaker talks, in order of first appearance."""
    totals: dict[str, float] = {}
    for turn in turns:
        totals[turn.speaker] = round(totals.get(turn.speaker, 0.0) + turn.end - turn.start, 2)
    return totals
