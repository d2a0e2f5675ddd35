"""Known speakers' reference clips, from an event's payload to decoded audio.

A clip arrives as base64 (validated at intake) or as an `audio_url`, which is fetched like an
event's own audio URL (allow-list, no internal addresses, size cap; skyhigh.speech.audio_url).
Each clip is decoded to 16 kHz mono and must last between MIN_REFERENCE_S and
DIARIZATION_MAX_REFERENCE_S: the event fails with a message naming the speaker otherwise.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from skyhigh.config import Settings
from skyhigh.domain.events import ErrorCode, StepFailed
from skyhigh.domain.payloads import KnownSpeakerRef
from skyhigh.speech.diarization.pipeline import KnownSpeaker
from skyhigh.speech.samples import SAMPLE_RATE, FloatArray

# Shorter than this, a clip holds too few embedding windows to say whose voice it is.
MIN_REFERENCE_S: Final = 1.0


def load_known_speakers(
    refs: Sequence[KnownSpeakerRef], settings: Settings, *, work_prefix: Path
) -> list[KnownSpeaker]:
    """Each reference decoded; its temporary files (`<work_prefix>-ref<i>`) are removed."""
    return [
        KnownSpeaker(ref.name, _load_clip(ref, settings, Path(f"{work_prefix}-ref{index}")))
        for index, ref in enumerate(refs)
    ]


def _load_clip(ref: KnownSpeakerRef, settings: Settings, path: Path) -> FloatArray:
    from skyhigh.speech.audio_url import fetch_audio_url
    from skyhigh.speech.decode import load_audio

    limit_s = settings.diarization_max_reference_s
    try:
        if ref.audio_base64 is not None:
            path.write_bytes(_decode(ref.audio_base64))
        else:
            assert ref.audio_url is not None  # KnownSpeakerRef always has one source
            fetch_audio_url(
                ref.audio_url,
                path,
                allowed_hosts=settings.audio_url_allowed_hosts,
                allow_private=settings.audio_url_allow_private,
                max_bytes=settings.max_audio_bytes,
                timeout_s=settings.audio_url_timeout_s,
            )
        audio = load_audio(
            path,
            max_seconds=limit_s,
            timeout_s=settings.ffmpeg_timeout_s,
            decoder=settings.audio_decoder,
        )
    except StepFailed as failure:
        message = failure.message
        if failure.code == ErrorCode.AUDIO_TOO_LONG:
            message = f"longer than {limit_s:g} s (DIARIZATION_MAX_REFERENCE_S); send a few seconds"
        raise StepFailed(failure.code, f"known speaker {ref.name!r}'s clip: {message}") from None
    finally:
        path.unlink(missing_ok=True)
    if len(audio) < MIN_REFERENCE_S * SAMPLE_RATE:
        raise StepFailed(
            ErrorCode.EMPTY_AUDIO,
            f"known speaker {ref.name!r}'s clip lasts {len(audio) / SAMPLE_RATE:.2f} s; "
            f"send at least {MIN_REFERENCE_S:g} s of their voice",
        )
    return audio


def _decode(value: str) -> bytes:
    data = value.strip()
    if data[:5].lower() == "data:":
        data = data.partition(",")[2]
    return base64.b64decode("".join(data.split()))
