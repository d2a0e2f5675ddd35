"""OpenAI-compatible endpoint benchmark: one clip, one set of weights, one run.

Rows, each timed from the client's side, one of each per round (order rotated every round):

* (a) `openai-sdk`: `client.audio.transcriptions.create(file=..., model="whisper-1")` through
  the official SDK against a real `uvicorn main:app` (the call returns the transcript);
* (b) `events`: `POST /events/upload` (lookup=false, so both do the same work), then waiting
  for the outcome on the event's SSE stream (`GET /events/{id}/stream`, no polling delay);
* (c) `bare`: SkyHigh's Transcriber in this process, the same engine object the workers call
  (same weights, same decoding options), on samples already decoded, on a worker thread like
  the service's: nothing around it;
* (d) `peer` (with --peer-python and --engine faster-whisper): faster-whisper-server 0.0.3 from
  PyPI in its own virtual environment, on the same CTranslate2 directory with the same
  compute type and decoding options, called through the same SDK.

With --calls N it measures throughput instead: N copies of one recording (--call, default
`call-phone` from bench.wer_recordings) uploaded at once through the SDK, --rounds times, to
SkyHigh and then to the peer, one server running at a time; audio seconds per second (median
of the rounds) and WER per server. `--peer speaches` runs the speaches server
(bench.speaches_peer) from a source tree (--peer-src) with its own Python (--peer-python).
`--skyhigh-config NAME KEY=VALUE ...` (repeatable) runs one SkyHigh server per configuration
in the same run, before the peer, so every ratio shares one peer figure.

The overhead reported is (a) / (c): everything the service adds to transcription (HTTP,
multipart, durable spool + store, queue, ffmpeg decoding, live channel, rendering). Because
other work on a shared machine can change between rows, (a) is also compared per call with
the engine time of that same call (`transcribe_s` from the event): `overhead_s` = wall -
transcribe_s and `wall_over_transcribe`, medians over the rounds.

Usage (repository root):

    uv run python -m bench.openai_bench --engine openai-whisper --rounds 8
    uv run python -m bench.openai_bench --engine faster-whisper --rounds 8 \
        --peer-python /tmp/peer/bin/python
    uv run python -m bench.openai_bench --engine faster-whisper --calls 4 --rounds 3 \
        --peer speaches --peer-python /tmp/speaches-venv/bin/python --peer-src /tmp/speaches

Writes JSON and a markdown table to --out (default bench/results/openai_bench[-ENGINE].json/.md,
with --calls bench/results/openai_bench-calls.json/.md).
Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
from whisper.normalizers import EnglishTextNormalizer

from bench import speaches_peer
from bench.wer_harness import score
from bench.wer_recordings import RECORDINGS, Recording, recording
from skyhigh.config import Settings
from skyhigh.speech.decode import load_audio
from skyhigh.speech.pool import TranscriberPool
from skyhigh.speech.protocol import TranscribeOptions
from skyhigh.speech.weights import resolve_whisper_model
from tests.speech_helpers import jfk_reference, wer
from tests.support.ports import HOST, free_port
from tests.support.server import serve_command, wait_ready

ROOT = Path(__file__).resolve().parent.parent

TOKEN = "bench-openai-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DECODING = {  # the service's decoding options (skyhigh.speech.decoding), for the peer
    "beam_size": 1,
    "best_of": 5,
    "temperature": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
    "compression_ratio_threshold": 2.4,
    "log_prob_threshold": -1.0,
    "no_speech_threshold": 0.6,
    "condition_on_previous_text": False,
    "vad_filter": False,
}


@contextmanager
def serving(
    command: Callable[[int], list[str]],
    env: dict[str, str],
    log: Path,
    ready: str,
    *,
    cwd: Path = ROOT,
) -> Iterator[str]:
    """Run a server process until it answers `ready` (a path) with 200; yield its base URL."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command(port),
            cwd=cwd,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(url, proc, log_path=log, timeout_s=300, path=ready)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def skyhigh_server(args: argparse.Namespace, tmp: Path, extra: tuple[str, ...] = ()) -> Any:
    lancedb = tmp / "lancedb_data"
    shutil.copytree(ROOT / "lancedb_data", lancedb)
    env = {
        "API_TOKENS": TOKEN,
        "DATABASE_URL": f"sqlite:///{tmp / 'events.db'}",
        "SPOOL_DIR": str(tmp / "spool"),
        "LANCEDB_URI": str(lancedb),
        "WHISPER_ENGINE": args.engine,
        "WHISPER_MODEL": args.model,
        "MODEL_CACHE_DIR": args.cache_dir,
        "WORKER_CONCURRENCY": "1",
        "WHISPER_INSTANCES": "1",
        "LOG_LEVEL": "WARNING",
        **dict(item.split("=", 1) for item in [*args.skyhigh_env, *extra]),
    }

    def command(port: int) -> list[str]:
        return serve_command(port, extra=["--no-access-log"])

    return serving(command, env, tmp / "skyhigh.log", "/ready")


def peer_server(args: argparse.Namespace, tmp: Path, ct2_dir: Path) -> Any:
    # Config mode, so its decoding options can be the service's; its form field for the model
    # is `model_name` (default "whisper-1"), so the model is configured under that name.
    config = {
        "models": [
            {
                "name": "whisper-1",
                "path": str(ct2_dir),
                "model_options": {
                    "device": "cpu",
                    "compute_type": "int8",
                    "cpu_threads": 0,
                    "num_workers": 1,
                },
                "transcribe_options": DECODING,
            }
        ]
    }
    path = tmp / "peer.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML

    def command(port: int) -> list[str]:
        server = [args.peer_python, "-m", "faster_whisper_server", "--config", str(path)]
        return [*server, "--host", HOST, "--port", str(port)]

    return serving(command, {"HF_HUB_OFFLINE": "1"}, tmp / "peer.log", "/health")


def speaches_server(args: argparse.Namespace, tmp: Path, ct2_dir: Path) -> Any:
    """speaches from its source tree (bench.speaches_peer), on `ct2_dir` as its Hub cache."""
    hf_home = tmp / "hf"
    speaches_peer.hub_cache(hf_home, ct2_dir)

    def command(port: int) -> list[str]:
        return speaches_peer.command(args.peer_python, port, HOST)

    env = speaches_peer.environment(hf_home)
    return serving(command, env, tmp / "peer.log", "/health", cwd=Path(args.peer_src))


# --------------------------------------------------------------------------- the rows


Row = Callable[[], str]  # runs once, returns the transcript


def sdk_row(
    url: str,
    clip: bytes,
    *,
    api_key: str,
    http: httpx.Client | None,
    model: str = "whisper-1",
) -> Row:
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0, timeout=600)
    breakdown: list[dict[str, Any]] = []

    def run() -> str:
        started = time.perf_counter()
        raw = sdk.audio.transcriptions.with_raw_response.create(
            file=("clip.wav", clip, "audio/wav"), model=model
        )
        text = raw.parse().text
        wall_s = time.perf_counter() - started
        event_id = raw.headers.get("x-event-id")
        if http is not None and event_id:
            breakdown.append({"wall_s": wall_s, **event_breakdown(http, event_id)})
        return text

    run.breakdown = breakdown  # type: ignore[attr-defined]
    return run


def events_row(http: httpx.Client, clip: bytes) -> Row:
    counter = iter(range(1_000_000))

    def run() -> str:
        event_id = f"bench-{os.getpid()}-{next(counter)}"
        files = {"file": ("clip.wav", clip, "audio/wav")}
        response = http.post(
            "/events/upload", files=files, data={"event_id": event_id, "lookup": "false"}
        )
        if response.status_code != 202:
            raise RuntimeError(f"refused: {response.status_code} {response.text[:200]}")
        with http.stream("GET", f"/events/{event_id}/stream") as stream:
            for line in stream.iter_lines():
                if not line.startswith("data: "):
                    continue
                message = json.loads(line[6:])
                if message.get("type") == "status" and message["status"] == "completed":
                    return str(message["result"]["transcript"]["text"])
                if message.get("type") == "status" and message["status"] == "failed":
                    raise RuntimeError(f"{event_id} failed: {message['error']}")
        raise RuntimeError(f"{event_id}: stream ended without an outcome")

    return run


def bare_row(args: argparse.Namespace, clip_path: Path) -> Row:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        api_tokens=TOKEN,
        whisper_engine=args.engine,
        whisper_model=args.model,
        model_cache_dir=Path(args.cache_dir),
    )
    transcriber = TranscriberPool.from_settings(settings.speech)
    audio = load_audio(clip_path, max_seconds=3600)
    # On a worker thread, as the service's dispatcher runs it: on this busy 2-core machine the
    # same call on the main thread measured 2-2.5x slower (torch's OpenMP team there), which
    # would flatter the service.
    worker = ThreadPoolExecutor(1, thread_name_prefix="bare-engine")

    def run() -> str:
        return worker.submit(transcriber.transcribe, audio, TranscribeOptions()).result().text

    return run


def event_breakdown(http: httpx.Client, event_id: str) -> dict[str, Any]:
    record = http.get(f"/events/{event_id}").json()
    created = datetime.fromisoformat(record["created_at"])
    started = datetime.fromisoformat(record["started_at"])
    finished = datetime.fromisoformat(record["finished_at"])
    return {
        "queue_s": (started - created).total_seconds(),
        "accept_to_done_s": (finished - created).total_seconds(),
        **record["result"]["timings"],
    }


# --------------------------------------------------------------------------- measuring


def measure(rows: dict[str, Row], rounds: int, reference: str | None) -> dict[str, dict[str, Any]]:
    names = list(rows)
    for name in names:  # warm-up: first-request costs (lazy loads, caches) are not measured
        rows[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    texts: dict[str, str] = {}
    for index in range(rounds):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            started = time.perf_counter()
            texts[name] = rows[name]()
            times[name].append(time.perf_counter() - started)
        print(f"round {index + 1}: " + ", ".join(f"{n} {times[n][-1]:.3f}s" for n in names))
    return {
        name: {
            "best_s": round(min(times[name]), 4),
            "median_s": round(statistics.median(times[name]), 4),
            "mean_s": round(statistics.fmean(times[name]), 4),
            "runs_s": [round(t, 4) for t in times[name]],
            "wer": None if reference is None else round(wer(reference, texts[name]), 4),
            "text": texts[name],
        }
        for name in names
    }


def settings_env() -> list[str]:
    """The settings given in the environment (they reach the server and the bare engine alike)."""
    prefixes = ("WHISPER_", "EMBEDDING_")
    return sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith(prefixes))


def markdown(report: dict[str, Any], peer: str) -> str:
    results = report["results"]
    bare = results["bare"]
    lines = [
        f"`{report['command']}`",
        "",
        f"engine {report['engine']}, model {report['model']}, clip {report['clip']} "
        f"({report['clip_seconds']:.1f} s), {report['rounds']} rounds; load average "
        f"{report['load_before'][0]:.2f} before, {report['load_after'][0]:.2f} after",
        "",
        "| row | best s | median s | mean s | × bare (median) | WER |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in results.items():
        ratio = row["median_s"] / bare["median_s"]
        lines.append(
            f"| {label(name, peer)} | {row['best_s']:.3f} | {row['median_s']:.3f} | "
            f"{row['mean_s']:.3f} | {ratio:.3f} | "
            + ("n/a" if row["wer"] is None else f"{row['wer']:.1%}")
            + " |"
        )
    if report.get("breakdown"):
        lines += ["", "(a) per call, medians: " + ", ".join(
            f"{key} {value:.3f}" for key, value in report["breakdown"].items()
        )]  # fmt: skip
    return "\n".join(lines) + "\n"


LABELS = {
    "openai_sdk": "(a) OpenAI SDK → /v1/audio/transcriptions",
    "events": "(b) POST /events/upload + SSE until completed",
    "bare": "(c) bare engine (SkyHigh Transcriber, in process)",
}
PEER_LABELS = {
    "faster-whisper-server": "(d) peer: faster-whisper-server 0.0.3, SDK",
    "speaches": "(d) peer: speaches, SDK",
}
# The model each peer is asked for: faster-whisper-server serves its configured "whisper-1";
# speaches maps "whisper-1" to large-v3, so it is asked for the repo id its cache holds.
PEER_MODELS = {"faster-whisper-server": "whisper-1", "speaches": speaches_peer.MODEL_ID}


def label(name: str, peer: str) -> str:
    return PEER_LABELS[peer] if name == "peer" else LABELS[name]


def rows_mode(args: argparse.Namespace, out: Path) -> None:
    clip_path = Path(args.clip)
    clip = clip_path.read_bytes()
    reference = jfk_reference() if clip_path.name == "jfk.wav" else None
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="openai-bench-") as tmp_name:
        tmp = Path(tmp_name)
        rows: dict[str, Row] = {}
        with (
            skyhigh_server(args, tmp) as url,
            httpx.Client(base_url=url, headers=AUTH, timeout=600) as http,
            peer_or_none(args, tmp) as peer_url,
        ):
            rows["openai_sdk"] = sdk_row(url, clip, api_key=TOKEN, http=http)
            rows["events"] = events_row(http, clip)
            rows["bare"] = bare_row(args, clip_path)
            if peer_url is not None:
                model = PEER_MODELS[args.peer]
                rows["peer"] = sdk_row(peer_url, clip, api_key="unused", http=None, model=model)
            results = measure(rows, args.rounds, reference)
            breakdown_runs = rows["openai_sdk"].breakdown[1:]  # type: ignore[attr-defined]
    breakdown = {
        key: round(statistics.median(run[key] for run in breakdown_runs), 4)
        for key in ("queue_s", "decode_s", "transcribe_s", "accept_to_done_s")
        if breakdown_runs and all(key in run for run in breakdown_runs)
    }
    if breakdown_runs and all("transcribe_s" in run for run in breakdown_runs):
        # Per call, against the engine time of that same call: robust to load that changes
        # between rows. wall = what the SDK waited; transcribe_s = the engine inside it.
        breakdown["overhead_s"] = round(
            statistics.median(run["wall_s"] - run["transcribe_s"] for run in breakdown_runs), 4
        )
        breakdown["wall_over_transcribe"] = round(
            statistics.median(run["wall_s"] / run["transcribe_s"] for run in breakdown_runs), 4
        )
    report = {
        "engine": args.engine,
        "model": args.model,
        "clip": str(clip_path.relative_to(ROOT) if clip_path.is_relative_to(ROOT) else clip_path),
        "clip_seconds": len(load_audio(clip_path, max_seconds=3600)) / 16_000,
        "rounds": args.rounds,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "overhead_a_over_c_median": round(
            results["openai_sdk"]["median_s"] / results["bare"]["median_s"], 4
        ),
        "overhead_a_over_c_best": round(
            results["openai_sdk"]["best_s"] / results["bare"]["best_s"], 4
        ),
        "breakdown": breakdown,
        "results": results,
        "command": " ".join([*settings_env(), ".venv/bin/python", *sys.argv]),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report, args.peer))
    print(markdown(report, args.peer))
    print(f"(a)/(c): median {report['overhead_a_over_c_median']}, best "
          f"{report['overhead_a_over_c_best']}; wrote {out}")  # fmt: skip


# --------------------------------------------------------------------------- calls at once


def wav_bytes(audio: Any) -> bytes:
    """16 kHz mono 16-bit WAV of float samples: the file both servers are sent."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def calls_at_once(
    url: str, call: Recording, args: argparse.Namespace, *, api_key: str, model: str
) -> dict[str, Any]:
    """`args.calls` uploads of `call` at once, `args.rounds` times, after one warm-up call."""
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0, timeout=1200)
    language = args.language or openai.omit

    def transcribe(clip: bytes) -> str:
        response = sdk.audio.transcriptions.create(
            file=("call.wav", clip, "audio/wav"), model=model, language=language
        )
        return response.text

    transcribe((ROOT / "tests" / "data" / "jfk.wav").read_bytes())  # loads lazy models
    clip = wav_bytes(call.audio)
    normalise = EnglishTextNormalizer()
    rates, texts, loads = [], [], []
    with ThreadPoolExecutor(args.calls) as threads:
        for index in range(args.rounds):
            started = time.perf_counter()
            round_texts = list(threads.map(transcribe, [clip] * args.calls))
            wall = time.perf_counter() - started
            rates.append(args.calls * call.duration_s / wall)
            texts += round_texts
            loads.append(os.getloadavg()[0])
            print(f"  round {index + 1}: {rates[-1]:.2f} audio-s/s ({wall:.2f} s), "
                  f"load {loads[-1]:.2f}", flush=True)  # fmt: skip
    scores = [score(normalise, call.reference, text) for text in texts]
    return {
        "audio_s_per_s": round(statistics.median(rates), 2),
        "rounds_audio_s_per_s": [round(rate, 2) for rate in rates],
        # Pooled over every transcript of every round (errors / reference words).
        "wer": round(sum(e for e, _ in scores) / sum(w for _, w in scores), 4),
        "distinct_texts": len(set(texts)),
        "load_1min": loads,
        "text": texts[0],
    }


def calls_mode(args: argparse.Namespace, out: Path) -> None:
    call = recording(args.call)
    ct2_dir = resolve_whisper_model(
        args.model, engine="faster-whisper", cache_dir=Path(args.cache_dir)
    ).ct2_dir
    assert ct2_dir is not None
    # One SkyHigh server per --skyhigh-config (over --skyhigh-env), then the peer once: the
    # ratios of one run share its machine state, and the peer is not re-measured per config.
    configs = args.skyhigh_config or [["skyhigh"]]
    servers: list[tuple[str, Callable[[Path], Any], str, str]] = [
        (name, partial(skyhigh_server, args, extra=tuple(extra)), TOKEN, "whisper-1")
        for name, *extra in configs
    ]
    if args.peer_python:
        start = speaches_server if args.peer == "speaches" else peer_server
        model = PEER_MODELS[args.peer]
        servers.append((args.peer, lambda tmp: start(args, tmp, ct2_dir), "unused", model))
    results: dict[str, dict[str, Any]] = {}
    for name, start_server, api_key, model in servers:  # one server at a time
        print(f"{name}: {args.calls} x {call.name} ({call.duration_s:.1f} s) at once, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="openai-bench-") as tmp:
            with start_server(Path(tmp)) as url:
                results[name] = calls_at_once(url, call, args, api_key=api_key, model=model)
    report = {
        "engine": args.engine,
        "model": args.model,
        "calls": args.calls,
        "rounds": args.rounds,
        "language": args.language or None,
        "recording": {"name": call.name, "seconds": round(call.duration_s, 2)},
        "skyhigh_env": args.skyhigh_env,
        "skyhigh_configs": {name: extra for name, *extra in args.skyhigh_config or []},
        "peer": args.peer if args.peer_python else None,
        "peer_commit": speaches_peer.commit(Path(args.peer_src)) if args.peer_src else None,
        "results": results,
        "command": " ".join([*settings_env(), ".venv/bin/python", *sys.argv]),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(calls_markdown(report))
    print(calls_markdown(report))
    print(f"wrote {out}")


def calls_markdown(report: dict[str, Any]) -> str:
    results = report["results"]
    peer = results.get(report["peer"]) if report["peer"] else None
    lines = [
        f"`{report['command']}`",
        "",
        f"{report['calls']} x {report['recording']['name']} "
        f"({report['recording']['seconds']} s) at once, {report['rounds']} rounds, model "
        f"{report['model']}, language {report['language'] or 'detected'}"
        + (f"; peer commit {report['peer_commit']}" if report["peer_commit"] else ""),
        "",
        "| server | audio-s/s (median) | rounds | x peer | WER | load (1 min) |",
        "|---|---:|---|---:|---:|---|",
    ]
    for name, row in results.items():
        ratio = f"{row['audio_s_per_s'] / peer['audio_s_per_s']:.2f}" if peer else "-"
        rounds = ", ".join(f"{rate:.2f}" for rate in row["rounds_audio_s_per_s"])
        loads = "-".join(f"{load:.2f}" for load in (min(row["load_1min"]), max(row["load_1min"])))
        lines.append(f"| {name} | {row['audio_s_per_s']:.2f} | {rounds} | {ratio} | "
                     f"{row['wer']:.3f} | {loads} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=["openai-whisper", "faster-whisper"])
    parser.add_argument("--model", default="base")
    parser.add_argument("--clip", default=str(ROOT / "tests" / "data" / "jfk.wav"))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "skyhigh"))
    parser.add_argument("--peer", choices=list(PEER_MODELS), default="faster-whisper-server")
    parser.add_argument("--peer-python", help="python of the peer's own virtual environment")
    parser.add_argument("--peer-src", help="speaches: its source tree (the server's cwd)")
    parser.add_argument("--calls", type=int, default=0, help="instead: uploads at once")
    parser.add_argument("--call", choices=RECORDINGS, default="call-phone")
    parser.add_argument("--language", default="en", help="--calls: language sent ('' detects)")
    parser.add_argument(
        "--skyhigh-env", nargs="*", default=[], metavar="KEY=VALUE", help="more server settings"
    )
    parser.add_argument(
        "--skyhigh-config",
        nargs="+",
        action="append",
        metavar="NAME [KEY=VALUE ...]",
        help="--calls: one more SkyHigh server in the same run (repeatable), over --skyhigh-env",
    )
    parser.add_argument("--out")
    args = parser.parse_args()
    args.engine = args.engine or "openai-whisper"
    if args.peer_python and args.engine != "faster-whisper":
        parser.error("the peer runs faster-whisper: use --engine faster-whisper")
    if args.peer == "speaches" and args.peer_python and not args.peer_src:
        parser.error("--peer speaches needs --peer-src (its source tree)")
    if any("=" not in item for item in args.skyhigh_env):
        parser.error("--skyhigh-env takes KEY=VALUE items")
    for name, *extra in args.skyhigh_config or []:
        if "=" in name or any("=" not in item for item in extra):
            parser.error("--skyhigh-config takes a NAME, then KEY=VALUE items")
    name = "calls" if args.calls else args.engine
    out = Path(args.out or ROOT / "bench" / "results" / f"openai_bench-{name}.json")
    (calls_mode if args.calls else rows_mode)(args, out)


@contextmanager
def peer_or_none(args: argparse.Namespace, tmp: Path) -> Iterator[str | None]:
    if not args.peer_python:
        yield None
        return
    ct2_dir = resolve_whisper_model(
        args.model, engine="faster-whisper", cache_dir=Path(args.cache_dir)
    ).ct2_dir
    assert ct2_dir is not None
    start = speaches_server if args.peer == "speaches" else peer_server
    with start(args, tmp, ct2_dir) as url:
        yield url


if __name__ == "__main__":
    main()
