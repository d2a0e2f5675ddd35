"""Speech accuracy harness: WER and real-time factor per setting, per engine, per recording.

Rerunnable evaluation for choosing speech defaults from measurements. Each grid entry is a set
of existing WHISPER_* settings over the service's own (Settings() from the environment); every
(engine, setting) pair is loaded through `TranscriberPool.from_settings`, exactly as the service
loads it, warmed up once on jfk.wav, then transcribes each recording (bench.wer_recordings says
what they are and where they come from). Text is normalised by openai-whisper's
`EnglishTextNormalizer` (one normaliser for references and hypotheses) and scored by jiwer.

    uv run python -m bench.wer_harness --model base                    # the full sweep
    uv run python -m bench.wer_harness --calls 4 --engines faster-whisper speaches-ref \
        --settings old-defaults defaults                               # 4 calls at once
    uv run python -m bench.wer_harness --model tiny.en --settings defaults beam5 \
        --recordings jfk-phone jfk-noisy --out bench/results/wer_smoke-tiny.en.json  # smoke

`speaches-ref` is the peer's configuration run through faster-whisper directly (speaches is not
on PyPI): `BatchedInferencePipeline`, beam 5, VAD threshold 0.5, 2 s minimum silence, 400 ms
padding; it runs once, whatever --settings says. `--calls N` instead transcribes N copies of
--call at once (one thread each, one model) and prints audio seconds per second per setting.

RTF = transcription seconds / audio seconds (lower is better), the median of --runs. The
1-minute load average is printed beside every row: figures taken at load > 1.5 are not quiet.
The overall WER of a setting pools the words of all its recordings (errors / reference words).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import jiwer
from whisper.normalizers import EnglishTextNormalizer

from bench.wer_recordings import DEFAULT_SET, RECORDINGS, Recording, recording
from skyhigh.config import Settings, SpeechSettings
from skyhigh.speech.pool import TranscriberPool
from skyhigh.speech.protocol import TranscribeOptions

RESULTS: Final = Path(__file__).resolve().parent / "results"
ENGINES: Final = ("openai-whisper", "faster-whisper", "speaches-ref")

# Each factor of the accuracy question on its own, as the WHISPER_* settings that express it.
GRID: Final[dict[str, dict[str, Any]]] = {
    "defaults": {},
    "beam1": {"whisper_beam_size": 1},
    # Between greedy and the default beam 5, at the current VAD defaults: what speed buys.
    "beam2": {"whisper_beam_size": 2},
    "beam3": {"whisper_beam_size": 3},
    "beam5": {"whisper_beam_size": 5},
    "vad-threshold-0.3": {"whisper_vad_threshold": 0.3},
    "vad-threshold-0.5": {"whisper_vad_threshold": 0.5},
    "min-silence-500ms": {"whisper_vad_min_silence_ms": 500},
    "min-silence-2000ms": {"whisper_vad_min_silence_ms": 2000},
    "pad-200ms": {"whisper_vad_speech_pad_ms": 200},
    "pad-400ms": {"whisper_vad_speech_pad_ms": 400},
    "pad-800ms": {"whisper_vad_speech_pad_ms": 800},
    # Chunks are always merged up to WHISPER_VAD_MAX_CHUNK_S; 10 s shows what merging buys.
    "chunks-10s": {"whisper_vad_max_chunk_s": 10.0},
    "no-fallback": {"whisper_temperature_fallback": False},
    # A merged chunk (<= 30 s) is one decoding pass: there is no earlier text inside it to
    # condition on. With VAD, condition_on_previous_text carries the previous chunk's text as
    # the prompt (chunks one at a time): this is the "prompt from the previous chunk" factor.
    "condition": {"whisper_condition_on_previous_text": True},
    # The peer's VAD (threshold 0.5, 2 s minimum silence, 400 ms padding, 30 s chunks).
    "peer-vad": {"whisper_vad_threshold": 0.5, "whisper_vad_min_silence_ms": 2000},
    "peer-vad-beam5": {
        "whisper_vad_threshold": 0.5,
        "whisper_vad_min_silence_ms": 2000,
        "whisper_beam_size": 5,
    },
    # Combinations of the factors that helped on their own.
    "silence2000-beam5": {"whisper_vad_min_silence_ms": 2000, "whisper_beam_size": 5},
    "silence2000-beam5-condition": {
        "whisper_vad_min_silence_ms": 2000,
        "whisper_beam_size": 5,
        "whisper_condition_on_previous_text": True,
    },
    # Throughput knobs (no effect on the text with greedy decoding; measured with --calls).
    "batch8": {"whisper_batch_size": 8},
    "cross-batch8": {"whisper_batch_size": 8, "whisper_cross_request_batching": True},
    # Two model instances of one thread each: two calls decode at once, one per core.
    "instances2-threads1": {"whisper_instances": 2, "whisper_cpu_threads": 1},
    # The threshold between 0.3 and 0.5 with the chosen silence and beam.
    "vad-0.35-s2000-beam5": {
        "whisper_vad_threshold": 0.35,
        "whisper_vad_min_silence_ms": 2000,
        "whisper_beam_size": 5,
    },
    "vad-0.4-s2000-beam5": {
        "whisper_vad_threshold": 0.4,
        "whisper_vad_min_silence_ms": 2000,
        "whisper_beam_size": 5,
    },
    "old-defaults": {
        "whisper_beam_size": 1,
        "whisper_vad_threshold": 0.3,
        "whisper_vad_min_silence_ms": 500,
        "whisper_vad_speech_pad_ms": 400,
    },
    # The repetition-loop guard (skyhigh.speech.loop_guard): off, and splitting at 1 s pauses.
    "no-loop-guard": {"whisper_loop_guard": False},
    "loop-guard-1000ms": {"whisper_loop_guard_min_silence_ms": 1000},
    "no-vad": {"whisper_vad": False},
    "no-vad-condition": {"whisper_vad": False, "whisper_condition_on_previous_text": True},
}
# The reference peer (speaches) run through faster-whisper directly: BatchedInferencePipeline,
# beam 5, VAD threshold 0.5, 2 s minimum silence, 400 ms padding, 30 s chunks.
PEER: Final = "speaches-ref"
PEER_VAD: Final = {"threshold": 0.5, "min_silence_duration_ms": 2000, "speech_pad_ms": 400}


class PeerPipeline:
    """The speaches-equivalent transcriber: faster-whisper's BatchedInferencePipeline."""

    def __init__(self, base: SpeechSettings, model: str) -> None:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        from skyhigh.speech.threads import available_cores
        from skyhigh.speech.weights import resolve_whisper_model

        resolved = resolve_whisper_model(
            model, engine="faster-whisper", cache_dir=base.model_cache_dir
        )
        whisper = WhisperModel(
            str(resolved.ct2_dir), compute_type="int8", cpu_threads=available_cores()
        )
        self._pipeline = BatchedInferencePipeline(whisper)

    def transcribe(self, audio: Any, options: TranscribeOptions) -> Any:
        segments, _ = self._pipeline.transcribe(
            audio, language=options.language, beam_size=5, vad_parameters=PEER_VAD
        )

        class _Text:
            text = " ".join(s.text.strip() for s in segments)

        return _Text()

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Row:
    engine: str
    setting: str
    recording: str
    audio_s: float
    wer: float
    errors: int
    reference_words: int
    rtf: float
    load_1min: float
    hypothesis: str


def load_1min() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def speech_settings(base: SpeechSettings, engine: str, model: str, name: str) -> SpeechSettings:
    """The service's speech settings with one grid entry applied (validated like the env).
    For the peer, the settings only carry its name and the model (its config is fixed)."""
    if engine == PEER:
        return base.model_copy(update={"whisper_engine": engine, "whisper_model": model})
    values = {**base.model_dump(), **GRID[name], "whisper_engine": engine, "whisper_model": model}
    return SpeechSettings.model_validate(values)


def score(normalise: EnglishTextNormalizer, reference: str, hypothesis: str) -> tuple[int, int]:
    """(word errors, reference words) after normalising both texts."""
    out = jiwer.process_words(normalise(reference), normalise(hypothesis) or "<empty>")
    errors = out.substitutions + out.deletions + out.insertions
    return errors, out.substitutions + out.deletions + out.hits


def run_setting(
    settings: SpeechSettings, name: str, recordings: list[Recording], args: argparse.Namespace
) -> list[Row]:
    """Load one (engine, setting) pool as production does and score every recording."""
    normalise = EnglishTextNormalizer()
    options = TranscribeOptions(language=args.language)
    pool: Any = (
        PeerPipeline(settings, settings.whisper_model)
        if settings.whisper_engine == PEER
        else TranscriberPool.from_settings(settings)
    )
    rows = []
    try:
        pool.transcribe(recordings[0].audio[: 16_000 * 5], options)  # warm-up, not timed
        for rec in recordings:
            times, text = [], ""
            for _ in range(args.runs):
                started = time.perf_counter()
                text = pool.transcribe(rec.audio, options).text
                times.append(time.perf_counter() - started)
            errors, words = score(normalise, rec.reference, text)
            rtf = statistics.median(times) / rec.duration_s
            row = Row(
                settings.whisper_engine,
                PEER if settings.whisper_engine == PEER else name,
                rec.name,
                round(rec.duration_s, 2),
                round(errors / words, 4),
                errors,
                words,
                round(rtf, 4),
                load_1min(),
                text,
            )
            print(
                f"{row.engine:15} {row.setting:20} {rec.name:14} {row.audio_s:7.1f} "
                f"{row.wer:7.3f} {row.rtf:7.3f} {row.load_1min:5.2f}",
                flush=True,
            )
            rows.append(row)
    finally:
        pool.close()
    return rows


def calls_at_once(
    settings: SpeechSettings, name: str, call: Recording, args: argparse.Namespace
) -> dict[str, Any]:
    """`args.calls` copies of `call` transcribed at once (one thread each, one model, as one
    service with one instance serves them): audio seconds per wall-clock second."""
    options = TranscribeOptions(language=args.language)
    peer = settings.whisper_engine == PEER
    pool: Any = PeerPipeline(settings, settings.whisper_model) if peer else None
    pool = pool or TranscriberPool.from_settings(settings)
    try:
        pool.transcribe(call.audio[: 16_000 * 5], options)  # warm-up, not timed
        started = time.perf_counter()
        with ThreadPoolExecutor(args.calls) as threads:
            audios = [call.audio] * args.calls
            texts = list(threads.map(lambda a: pool.transcribe(a, options).text, audios))
        wall = time.perf_counter() - started
    finally:
        pool.close()
    errors, words = score(EnglishTextNormalizer(), call.reference, texts[0])
    out = {
        "engine": settings.whisper_engine,
        "setting": PEER if peer else name,
        "calls": args.calls,
        "recording": call.name,
        "audio_s_per_s": round(args.calls * call.duration_s / wall, 2),
        "wall_s": round(wall, 2),
        "wer": round(errors / words, 4),
        "load_1min": load_1min(),
    }
    print(out, flush=True)
    return out


def print_calls(calls: list[dict[str, Any]]) -> None:
    peer = next((c["audio_s_per_s"] for c in calls if c["engine"] == PEER), None)
    print(f"\n{'engine':15} {'setting':20} {'audio-s/s':>9} {'x peer':>7} load")
    for c in calls:
        ratio = f"{c['audio_s_per_s'] / peer:7.2f}" if peer else "      -"
        print(
            f"{c['engine']:15} {c['setting']:20} {c['audio_s_per_s']:9.2f} {ratio} "
            f"{c['load_1min']:5.2f}"
        )


def summary(rows: list[Row]) -> list[dict[str, Any]]:
    """Per (engine, setting): pooled WER over all recordings and the overall RTF."""
    out = []
    for key in dict.fromkeys((r.engine, r.setting) for r in rows):
        group = [r for r in rows if (r.engine, r.setting) == key]
        errors, words = sum(r.errors for r in group), sum(r.reference_words for r in group)
        seconds = sum(r.rtf * r.audio_s for r in group)
        audio = sum(r.audio_s for r in group)
        out.append(
            {
                "engine": key[0],
                "setting": key[1],
                "wer": round(errors / words, 4),
                "rtf": round(seconds / audio, 4),
                "max_load_1min": max(r.load_1min for r in group),
            }
        )
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="base", help="WHISPER_MODEL (base, tiny.en, ...)")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--settings", nargs="+", choices=list(GRID), default=list(GRID))
    parser.add_argument("--recordings", nargs="+", choices=RECORDINGS, default=list(DEFAULT_SET))
    parser.add_argument(
        "--calls", type=int, default=0, help="instead: this many calls at once, audio-s/s"
    )
    parser.add_argument("--call", choices=RECORDINGS, default="call-phone")
    parser.add_argument("--runs", type=int, default=1, help="timed runs per recording (median)")
    parser.add_argument("--language", default="en", help="forced language ('' to detect)")
    parser.add_argument(
        "--out", type=Path, help="JSON path (default bench/results/wer-<model>.json)"
    )
    args = parser.parse_args()
    args.language = args.language or None
    return args


def main() -> None:
    args = parse_args()
    base = Settings().speech
    recordings = [recording(name) for name in args.recordings]
    for rec in recordings:
        print(f"recording {rec.name:14} {rec.duration_s:6.1f} s  {rec.source}")
    print(
        f"{'engine':15} {'setting':20} {'recording':14} {'audio s':>7} {'WER':>7} {'RTF':>7} load"
    )
    rows: list[Row] = []
    calls: list[dict[str, Any]] = []
    for engine in args.engines:
        for name in args.settings[:1] if engine == PEER else args.settings:
            settings = speech_settings(base, engine, args.model, name)
            if args.calls:
                calls.append(calls_at_once(settings, name, recording(args.call), args))
            else:
                rows += run_setting(settings, name, recordings, args)
    if calls:
        print_calls(calls)
    totals = summary(rows) if rows else []
    print(f"\n{'engine':15} {'setting':20} {'WER (pooled)':>12} {'RTF':>7} max load")
    for t in totals:
        print(
            f"{t['engine']:15} {t['setting']:20} {t['wer']:12.3f} {t['rtf']:7.3f} "
            f"{t['max_load_1min']:5.2f}"
        )
    out = args.out or RESULTS / f"wer-{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "model": args.model,
        "language": args.language,
        "runs": args.runs,
        "normaliser": "whisper.normalizers.EnglishTextNormalizer",
        "grid": {name: GRID[name] for name in args.settings},
        "calls_at_once": calls,
        "recordings": {
            r.name: {"seconds": r.duration_s, "source": r.source, "reference": r.reference}
            for r in recordings
        },
        "summary": totals,
        "rows": [asdict(r) for r in rows],
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
