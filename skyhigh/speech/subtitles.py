"""Transcript renderings: plain text, SRT and WebVTT."""

from __future__ import annotations

from skyhigh.domain.events import Transcript


def _timestamp(seconds: float, *, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cues(transcript: Transcript) -> list[tuple[float, float, str]]:
    cues = []
    for segment in transcript.segments:
        text = segment.text.strip()
        if text:
            # Players reject cues that end before they start; clamp rounding artefacts.
            cues.append((segment.start, max(segment.end, segment.start + 0.001), text))
    return cues


def to_text(transcript: Transcript) -> str:
    return transcript.text.strip() + "\n"


def to_srt(transcript: Transcript) -> str:
    blocks = []
    for index, (start, end, text) in enumerate(_cues(transcript), start=1):
        span = f"{_timestamp(start, separator=',')} --> {_timestamp(end, separator=',')}"
        blocks.append(f"{index}\n{span}\n{text}\n")
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    blocks = [
        f"{_timestamp(start, separator='.')} --> {_timestamp(end, separator='.')}\n{text}\n"
        for start, end, text in _cues(transcript)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


RENDERERS = {"txt": to_text, "srt": to_srt, "vtt": to_vtt}
MEDIA_TYPES = {"txt": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}
