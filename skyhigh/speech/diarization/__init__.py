"""Speaker diarization: who spoke when, from the clip and its VAD speech regions.

Independent of the Whisper engines: `Diarizer.diarize` turns audio + speech regions (+ optional
speaker-count hints and known speakers' reference clips) into `Turn`s, and `assign_speakers` maps
them onto any engine's segments and words. The speaker encoder is the GE2E model bundled in the
`resemblyzer` wheel (encoder.py), run by ONNX Runtime from a cached export (onnx_model.py) or by
torch.
"""

from skyhigh.speech.diarization.assign import (
    SpeakerSegment,
    SpeakerWord,
    assign_speakers,
    talk_time,
)
from skyhigh.speech.diarization.clustering import SpeakerHints
from skyhigh.speech.diarization.pipeline import DiarizationOptions, Diarizer, KnownSpeaker, Turn

__all__ = [
    "DiarizationOptions",
    "Diarizer",
    "KnownSpeaker",
    "SpeakerHints",
    "SpeakerSegment",
    "SpeakerWord",
    "Turn",
    "assign_speakers",
    "talk_time",
]
