"""Transcript renderings: plain text, SRT and WebVTT, with speakers when diarized.

A diarized transcript (segments carry `speaker`) renders its speakers the way each format can:
txt as one `SPEAKER_00: ...` line per turn, SRT with a `[name] ` prefix on each cue, WebVTT with
voice tags (`<v name>...</v>`, which players show as the cue's speaker).
"""

from __future__ import annotations

from skyhigh.domain.events import Transcript


def _timestamp(seconds: float, *, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


Cue = tuple[float, float, str, str | None]  # start, end, text, speaker


def _cues(transcript: Transcript) -> list[Cue]:
    cues = []
    for segment in transcript.segments:
        text = segment.text.strip()
        if text:
            # Players reject cues that end before they start; clamp rounding artefacts.
            end = max(segment.end, segment.start + 0.001)
            cues.append((segment.start, end, text, segment.speaker))
    return cues


def to_text(transcript: Transcript) -> str:
    cues = _cues(transcript)
    if not any(speaker for *_, speaker in cues):
        return transcript.text.strip() + "\n"
    turns: list[tuple[str | None, list[str]]] = []
    for *_, text, speaker in cues:
        if turns and turns[-1][0] == speaker:
            turns[-1][1].append(text)
        else:
            turns.append((speaker, [text]))
    return "".join(f"{speaker or 'UNKNOWN'}: {' '.join(texts)}\n" for speaker, texts in turns)


def to_srt(transcript: Transcript) -> str:
    blocks = []
    for index, (start, end, text, speaker) in enumerate(_cues(transcript), start=1):
        span = f"{_timestamp(start, separator=',')} --> {_timestamp(end, separator=',')}"
        label = f"[{speaker}] " if speaker else ""
        blocks.append(f"{index}\n{span}\n{label}{text}\n")
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    blocks = [
        f"{_timestamp(start, separator='.')} --> {_timestamp(end, separator='.')}\n"
        f"{_voice(text, speaker)}\n"
        for start, end, text, speaker in _cues(transcript)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def _voice(text: str, speaker: str | None) -> str:
    if speaker is None:
        return text
    # Inside a voice span `<` and `&` start markup: escaped as WebVTT requires (names cannot
    # hold them: skyhigh.domain.payloads.SPEAKER_NAME).
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"<v {speaker}>{escaped}</v>"


RENDERERS = {"txt": to_text, "srt": to_srt, "vtt": to_vtt}
MEDIA_TYPES = {"txt": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}
