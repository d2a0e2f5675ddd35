"""Diarization without torch, checked in a fresh interpreter once per test session.

An image without torch diarizes with the speaker model's ONNX export. Two tests check that
path: the diarizer on the ONNX encoder (tests/test_diarization.py) and the worker's diarization
step as a server runs it (tests/test_diarization_server.py). Each needs a Python process that
never imported torch, and the conversation built there; that start and build are most of what
either costs, so one process runs both parts, noting after each which heavy modules were
loaded, and each test asserts on its own part.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from typing import Any

from skyhigh.speech.diarization.onnx_model import ensure_speaker_onnx
from tests.support.settings import ROOT, model_cache_dir

SCRIPT = r"""
import json, sys
from pathlib import Path
from tests.conversations import conversations, der

def loaded():
    heavy = {"torch", "resemblyzer", "librosa"}
    return sorted(n for n in sys.modules if n.split(".")[0] in heavy)

cache_dir = Path(sys.argv[1])
conversation = conversations()[0]

# The diarizer on the ONNX encoder.
from skyhigh.speech.diarization import Diarizer
from skyhigh.speech.diarization.onnx_model import OnnxSpeakerEncoder, find_speaker_onnx
model = find_speaker_onnx(cache_dir=cache_dir)
turns = Diarizer(OnnxSpeakerEncoder(model)).diarize(conversation.audio, conversation.regions)
hyp = [(t.start, t.end, t.speaker) for t in turns]
encoder = {"der": der(conversation.turns, hyp), "loaded": loaded()}

# The worker's step (its own model, as a server builds it), on one segment per reference turn:
# the labels then follow the diarization alone.
from skyhigh.config import Settings
from skyhigh.domain.events import Segment, Transcript
from skyhigh.speech.diarization.service import SpeakerModel, diarize_transcript
settings = Settings(_env_file=None, model_cache_dir=cache_dir)
segments = [
    Segment(id=i, start=s, end=e, text=" x", avg_logprob=0, no_speech_prob=0)
    for i, (s, e, _) in enumerate(conversation.turns)
]
transcript = Transcript(text="x", language="en", duration_s=30, segments=segments)
labelled = diarize_transcript(SpeakerModel(settings.speech).get(), conversation.audio, transcript)
hyp = [(s.start, s.end, s.speaker) for s in labelled.segments]
worker = {
    "der": der(conversation.turns, hyp),
    "loaded": loaded(),
    "speakers": [s.speaker for s in labelled.speakers or ()],
}
print(json.dumps({"encoder": encoder, "worker": worker}))
"""


@cache
def torch_free_diarization() -> dict[str, Any]:
    """{"encoder": {der, loaded}, "worker": {der, loaded, speakers}} from a fresh interpreter;
    `loaded` names the torch, resemblyzer or librosa modules imported by the end of that part."""
    ensure_speaker_onnx(cache_dir=model_cache_dir())  # the export (torch) happens here
    return fresh_interpreter(SCRIPT, str(model_cache_dir()))


def fresh_interpreter(script: str, *args: str) -> dict[str, Any]:
    """Run `script` in a new Python (nothing imported yet) and return the JSON of its last line."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    outcome: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return outcome
