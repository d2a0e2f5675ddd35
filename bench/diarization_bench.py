"""Diarization benchmark: DER per test conversation, and what diarizing adds to a transcription.

1. DER (0.25 s collar, definition in tests/conversations.py) and the speaker count on each test
   conversation (real recordings of different people joined with known turns), with speech
   regions from Silero VAD, for each speaker-encoder backend (ONNX, the default, and torch);
   the same with two speakers named by reference clips.
2. A ~10-minute two-speaker recording (the sonnet and Sense and Sensibility readers taking turns,
   their utterances reused in rotation), transcribed by faster-whisper int8 through the service's
   loader (skyhigh.speech.pool), then diarized as a worker does it (SpeakerModel, the
   diarization VAD, embeddings, clustering): the added time as a share of the transcription
   time, and the peak RSS diarization adds over the resident size after transcribing (VmHWM
   restarted there through /proc/self/clear_refs), after each step.

Usage (repository root):

    .venv/bin/python bench/diarization_bench.py --model base --out bench/results/diarization.json

The 1-minute load average is printed beside each figure: others may be running on this machine.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import time
from pathlib import Path
from typing import Any

from skyhigh.config import Settings
from skyhigh.speech.diarization import Diarizer, KnownSpeaker
from skyhigh.speech.diarization.encoder import SpeakerEncoder, TorchSpeakerEncoder
from skyhigh.speech.diarization.onnx_model import (
    OnnxSpeakerEncoder,
    ensure_speaker_onnx,
)
from skyhigh.speech.diarization.service import DIARIZATION_VAD, SpeakerModel, speech_regions
from skyhigh.speech.pool import TranscriberPool
from skyhigh.speech.protocol import TranscribeOptions
from skyhigh.speech.vad import speech_spans
from tests.conversations import (
    alternate,
    build,
    conversations,
    der,
    utterances,
)

ROOT = Path(__file__).resolve().parent.parent


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def regions_of(audio: Any) -> list[tuple[float, float]]:
    return [(a / 16_000, b / 16_000) for a, b in speech_spans(audio, DIARIZATION_VAD)]


def der_table(encoders: dict[str, SpeakerEncoder]) -> list[dict[str, Any]]:
    rows = []
    for conversation in conversations():
        regions = regions_of(conversation.audio)
        for backend, encoder in encoders.items():
            started = time.perf_counter()
            turns = Diarizer(encoder).diarize(conversation.audio, regions)
            elapsed = time.perf_counter() - started
            hypothesis = [(t.start, t.end, t.speaker) for t in turns]
            rows.append(
                {
                    "conversation": conversation.name,
                    "backend": backend,
                    "duration_s": round(len(conversation.audio) / 16_000, 1),
                    "speakers": len(conversation.speakers),
                    "found": len({t.speaker for t in turns}),
                    "der": round(der(conversation.turns, hypothesis), 4),
                    "diarize_s": round(elapsed, 2),
                    "load1": load(),
                }
            )
            print(rows[-1], flush=True)
    return rows


def known_speaker_row(encoder: SpeakerEncoder) -> dict[str, Any]:
    conversation = conversations()[2]
    known = [
        KnownSpeaker("Marianne", utterances("austen")[-1].audio),
        KnownSpeaker("Reader", utterances("sonnet")[-1].audio),
    ]
    turns = Diarizer(encoder).diarize(
        conversation.audio, regions_of(conversation.audio), known_speakers=known
    )
    names = {"austen": "Marianne", "sonnet": "Reader"}
    reference = [(s, e, names.get(who, who)) for s, e, who in conversation.turns]
    hypothesis = [
        (t.start, t.end, "jfk" if t.speaker == "SPEAKER_02" else t.speaker) for t in turns
    ]
    row = {
        "conversation": conversation.name + " (2 named)",
        "names": sorted({t.speaker for t in turns}),
        "der_names_literal": round(der(reference, hypothesis), 4),
        "load1": load(),
    }
    print(row, flush=True)
    return row


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak() -> None:
    """Hand freed heap back and restart VmHWM from the current RSS (Linux: clear_refs 5)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")


def long_recording_row(model: str) -> dict[str, Any]:
    conversation = build("ten-minutes", alternate("sonnet", "austen", turns=150), seed=9)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        whisper_engine="faster-whisper",
        whisper_model=model,
        whisper_compute_type="int8",
    )
    transcriber = TranscriberPool.from_settings(settings.speech)
    transcriber.transcribe(conversation.audio[: 16_000 * 20], TranscribeOptions())  # warm-up
    started, load_before = time.perf_counter(), load()
    transcriber.transcribe(conversation.audio, TranscribeOptions(word_timestamps=True))
    transcribe_s = time.perf_counter() - started
    # Peak RSS added: from the resident size after transcribing (transcriber loaded, its
    # transient peak released), through each step of diarizing as a worker runs it.
    reset_peak()
    baseline_mb = rss_mb()
    steps: dict[str, float] = {}
    started = time.perf_counter()
    diarizer = SpeakerModel(settings.speech).get()
    load_s = time.perf_counter() - started
    steps["load_speaker_model_mb"] = round(peak_rss_mb() - baseline_mb, 1)
    started = time.perf_counter()
    regions = speech_regions(conversation.audio)
    steps["vad_regions_mb"] = round(peak_rss_mb() - baseline_mb, 1)
    turns = diarizer.diarize(conversation.audio, regions)
    diarize_s = time.perf_counter() - started
    steps["embed_cluster_mb"] = round(peak_rss_mb() - baseline_mb, 1)
    hypothesis = [(t.start, t.end, t.speaker) for t in turns]
    row = {
        "recording_s": round(len(conversation.audio) / 16_000, 1),
        "model": f"faster-whisper {model} int8",
        "transcribe_s": round(transcribe_s, 2),
        "diarize_s": round(diarize_s, 2),
        "speaker_model_load_s": round(load_s, 2),
        "added": round(diarize_s / transcribe_s, 4),
        "rss_before_diarizing_mb": round(baseline_mb, 1),
        "peak_rss_added_mb": round(peak_rss_mb() - baseline_mb, 1),
        "peak_rss_added_by_step_mb": steps,
        "der": round(der(conversation.turns, hypothesis), 4),
        "found": len({t.speaker for t in turns}),
        "load1_before": load_before,
        "load1_after": load(),
    }
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="base", help="bundled faster-whisper model")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "diarization.json")
    parser.add_argument("--skip-long", action="store_true", help="only the DER table")
    parser.add_argument("--only-long", action="store_true", help="only the 10-minute recording")
    args = parser.parse_args()
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    results: dict[str, Any] = {}
    if not args.skip_long:
        # First, so its RSS baseline holds only the transcriber.
        results["long"] = long_recording_row(args.model)
    if args.only_long:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        return
    onnx = OnnxSpeakerEncoder(ensure_speaker_onnx(cache_dir=settings.model_cache_dir))
    results["der"] = der_table({"onnx": onnx, "torch": TorchSpeakerEncoder()})
    results["known"] = known_speaker_row(onnx)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
