"""Speech benchmark: bare engines against the service, on the same weights, in one run.

Configurations, all on ~60 s of real speech (tests/data/jfk.wav concatenated --repeats times):

* bare openai-whisper: `whisper.transcribe` on the checkpoint skyhigh.speech.ct2_converter makes
  from the bundled CTranslate2 weights (float32 on CPU);
* bare faster-whisper int8 and float32 on the same CTranslate2 directory;
* the service end to end: a real `uvicorn main:app` subprocess (WORKER_CONCURRENCY=1), the clip
  POSTed to /events/upload (lookup=true), latency = the event's finished_at - created_at
  (accept → completed), plus the client's wall time from POST to seeing `completed` (polling).

Every engine gets exactly the decoding options the service uses (skyhigh.speech.decoding): greedy
(beam_size 1), best_of 5, the temperature fallback ladder, compression-ratio 2.4, logprob -1.0,
no-speech 0.6, condition_on_previous_text False, language detection unless --language is given.
Models are loaded once and warmed up on the 11 s clip; only transcription is timed.

Then /health latency while two long transcriptions run (WORKER_CONCURRENCY=2, WHISPER_INSTANCES
2, and 1 for comparison) and the API process's memory (VmRSS / VmHWM from /proc/<pid>/status).

Usage (repository root; needs ffmpeg):

    uv run python -m bench.speech_bench --model base --repeats 6 --runs 2 \
        --out bench/out/speech.json

RTF (real-time factor) = processing seconds / audio seconds (lower is better); `x realtime` is
its inverse. Writes JSON to --out and a markdown table next to it (.md). Only 127.0.0.1 is
contacted.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from skyhigh.config import Settings
from skyhigh.speech.decode import SAMPLE_RATE, load_audio
from skyhigh.speech.decoding import (
    BEST_OF,
    COMPRESSION_RATIO_THRESHOLD,
    TEMPERATURES,
    DecodingSettings,
)
from skyhigh.speech.weights import resolve_whisper_model
from tests.speech_helpers import jfk_reference, wer
from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
TOKEN = "bench-speech-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TERMINAL = {"completed", "failed"}
BUSY_PATTERN = "intake_load|docker build|pytest"

Audio = npt.NDArray[np.float32]

# --------------------------------------------------------------------------- machine state


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def busy_processes() -> list[str]:
    found = subprocess.run(["pgrep", "-af", BUSY_PATTERN], capture_output=True, text=True)
    own = {os.getpid(), os.getppid()}
    lines = []
    for line in found.stdout.splitlines():
        pid = int(line.split(maxsplit=1)[0])
        if pid not in own:
            lines.append(line)
    return lines


_CLK_TCK = os.sysconf("SC_CLK_TCK")
OTHER_CPU_LIMIT = 0.15  # cores used by anything but this script and its servers = "not quiet"


def system_busy_ticks() -> int:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq + steal


def process_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime (waited-for children, e.g. ffmpeg, included)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    rest = text.rsplit(")", 1)[1].split()
    return sum(int(v) for v in rest[11:15])


def own_ticks() -> int:
    pids = [os.getpid()] + [s.proc.pid for s in _LIVE if s.proc is not None]
    return sum(process_ticks(pid) for pid in pids)


class CpuMeter:
    """CPU used by everything except this script and its servers, in cores, since start."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.system = system_busy_ticks()
        self.own = own_ticks()

    def other_cores(self) -> float:
        elapsed = max(1e-3, time.monotonic() - self.started)
        other = (system_busy_ticks() - self.system) - (own_ticks() - self.own)
        return max(0.0, other / _CLK_TCK / elapsed)


def other_cpu(window_s: float = 3.0) -> float:
    meter = CpuMeter()
    time.sleep(window_s)
    return meter.other_cores()


_WAITED = [0.0, float("inf")]  # seconds waited so far, total allowed (--wait-total-s)


def wait_until_quiet(max_wait_s: float, poll_s: float = 30.0) -> dict[str, Any]:
    """Poll for other helpers' benchmarks/builds/tests; go on after max_wait_s regardless."""
    started = time.monotonic()
    max_wait_s = max(0.0, min(max_wait_s, _WAITED[1] - _WAITED[0]))
    seen: list[str] = []
    cores = 0.0
    while True:
        busy = busy_processes()
        # Also catch what the names miss (containers, other servers): CPU used by others.
        cores = other_cpu() if not busy else 0.0
        if not busy and cores < OTHER_CPU_LIMIT:
            break
        seen = busy or [f"other processes use {cores:.2f} cores"]
        if time.monotonic() - started > max_wait_s:
            print(f"still busy after {max_wait_s:.0f}s, measuring anyway: {seen}", flush=True)
            break
        print(f"waiting for quiet: {seen[0][:100]}", flush=True)
        time.sleep(poll_s)
    _WAITED[0] += time.monotonic() - started
    return {
        "waited_s": round(time.monotonic() - started, 1),
        "quiet": not busy_processes() and cores < OTHER_CPU_LIMIT,
        "other_cpu_cores": round(cores, 3),
        "last_busy": seen[:5],
        "load_average": load_average(),
    }


class Watch:
    """Notes whether other benchmarks/builds/tests ran at any moment during a timed block."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.other_cores = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Watch:
        self._meter = CpuMeter()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.other_cores = self._meter.other_cores()
        if self.other_cores >= OTHER_CPU_LIMIT and not self.seen:
            self.seen = [f"other processes used {self.other_cores:.2f} cores"]

    def _poll(self) -> None:
        while not self._stop.is_set():
            busy = busy_processes()
            if busy:
                self.seen = busy
            self._stop.wait(1.0)

    @property
    def contended(self) -> bool:
        return bool(self.seen)


def quietly(
    args: argparse.Namespace, label: str, block: Callable[[int], Any]
) -> tuple[Any, dict[str, Any]]:
    """Run block(attempt) when nothing else is busy; redo it if something started meanwhile.

    Returns (the block's value, {contended, other_cpu_cores, attempts} of the kept attempt).
    """
    value: Any = None
    info: dict[str, Any] = {}
    for attempt in range(args.retries + 1):
        wait_until_quiet(args.wait_quiet_s, poll_s=10.0)
        with Watch() as watch:
            value = block(attempt)
        info = {
            "contended": watch.contended,
            "other_cpu_cores": round(watch.other_cores, 3),
            "attempts": attempt + 1,
        }
        if not watch.contended:
            break
        print(f"  {label}: other work ran meanwhile ({watch.seen[:2]}); attempt {attempt + 1}")
    return value, info


def machine() -> dict[str, Any]:
    import ctranslate2
    import faster_whisper
    import torch
    import whisper

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "gpu": "none (CPU only)",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "openai_whisper": whisper.__version__,
        "faster_whisper": faster_whisper.__version__,
        "ctranslate2": ctranslate2.__version__,
    }


# --------------------------------------------------------------------------- audio


def make_clip(repeats: int, dest: Path) -> Path:
    """tests/data/jfk.wav back to back, `repeats` times (ffmpeg concat filter)."""
    inputs: list[str] = []
    for _ in range(repeats):
        inputs += ["-i", str(DATA / "jfk.wav")]
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *inputs,
         "-filter_complex", f"concat=n={repeats}:v=0:a=1", str(dest)],
        check=True,
    )  # fmt: skip
    return dest


def concat(inputs: list[Path], dest: Path) -> Path:
    args: list[str] = []
    for path in inputs:
        args += ["-i", str(path)]
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args, "-filter_complex",
         f"concat=n={len(inputs)}:v=0:a=1", "-ar", "16000", "-ac", "1", str(dest)],
        check=True,
    )  # fmt: skip
    return dest


def passages() -> list[str]:
    """Knowledge-base answers that TTS reads as written: no digits, symbols or acronyms."""
    chosen = []
    for line in (ROOT / "data" / "knowledge.jsonl").read_text().splitlines():
        text = json.loads(line)["text"] if line.strip() else ""
        if text and not re.search(r"[0-9$%&/@#()]|\b[A-Z]{2,}\b|SkyHigh", text):
            chosen.append(text)
    return chosen


def build_clip(kind: str, repeats: int, seconds: float, tmp: Path) -> tuple[Path, str, str]:
    """(clip, reference text, description) for --clip jfk or --clip varied."""
    if kind == "jfk":
        clip = make_clip(repeats, tmp / f"jfk_x{repeats}.wav")
        reference = " ".join([jfk_reference()] * repeats)
        return clip, reference, f"tests/data/jfk.wav x {repeats} (ffmpeg concat)"
    from speech_helpers import synthesize

    # 0.8 s of silence between the voices: without it whisper skips the first TTS sentences
    # after JFK's last word (both engines), which measures a seam, not the engines.
    gap = tmp / "gap.wav"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", "anullsrc=r=16000:cl=mono", "-t", "0.8", str(gap)],
        check=True,
    )  # fmt: skip
    parts, texts, total = [DATA / "jfk.wav"], [jfk_reference()], 11.0
    for index, text in enumerate(passages()):
        if total >= seconds:
            break
        part = synthesize(text, tmp / f"passage-{index}.wav")
        parts += [gap, part]
        texts.append(text)
        total += 0.8 + len(decode(part)) / SAMPLE_RATE
    clip = concat(parts, tmp / "varied.wav")
    description = (
        f"tests/data/jfk.wav + {len(texts) - 1} knowledge-base answers read by espeak-ng "
        "(en-us+klatt, 140 wpm), 0.8 s gaps: no text repeats, so no window needs the "
        "temperature fallback"
    )
    return clip, " ".join(texts), description


def decode(path: Path) -> Audio:
    return load_audio(path, max_seconds=3600)


# --------------------------------------------------------------------------- results


@dataclass
class Run:
    seconds: float
    text: str
    wer: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ConfigResult:
    name: str
    kind: str  # "bare" | "service"
    engine: str
    compute: str
    audio_s: float
    runs: list[Run] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def best_s(self) -> float:
        return min(r.seconds for r in self.runs)

    @property
    def mean_s(self) -> float:
        return statistics.fmean(r.seconds for r in self.runs)

    def summary(self) -> dict[str, Any]:
        wers = sorted({round(r.wer, 4) for r in self.runs})
        return {
            "best_s": round(self.best_s, 3),
            "mean_s": round(self.mean_s, 3),
            "rtf_best": round(self.best_s / self.audio_s, 4),
            "rtf_mean": round(self.mean_s / self.audio_s, 4),
            "x_realtime_best": round(self.audio_s / self.best_s, 2),
            "wer": self.runs[0].wer,
            "wer_values": wers,
            "contended_runs": sum(1 for r in self.runs if r.extra.get("contended")),
        }


# --------------------------------------------------------------------------- bare engines


BEAM_SIZE: list[int] = []  # --beam-size, when given: applied to every engine and the service


def decoding() -> DecodingSettings:
    # The service's defaults, read the way the service reads them (no .env, no environment).
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    if BEAM_SIZE:
        settings.whisper_beam_size = BEAM_SIZE[0]
    return DecodingSettings.from_settings(settings)


# text, and how many segments came from a window that needed the temperature fallback
Transcribe = Callable[[Audio], tuple[str, int]]


def openai_engine(checkpoint: Path, language: str | None) -> Transcribe:
    import whisper

    d = decoding()
    model = whisper.load_model(str(checkpoint), device="cpu")

    def run(audio: Audio) -> tuple[str, int]:
        result = whisper.transcribe(
            model,
            audio,
            verbose=None,
            temperature=TEMPERATURES,
            compression_ratio_threshold=COMPRESSION_RATIO_THRESHOLD,
            logprob_threshold=d.logprob_threshold,
            no_speech_threshold=d.no_speech_threshold,
            condition_on_previous_text=d.condition_on_previous_text,
            initial_prompt=None,
            word_timestamps=False,
            language=language,
            task="transcribe",
            beam_size=d.beam_size if d.beam_size > 1 else None,
            best_of=BEST_OF,
            fp16=False,
        )
        segments = result["segments"]
        text = "".join(str(s["text"]) for s in segments).strip()
        return text, sum(1 for s in segments if float(s["temperature"]) > 0)

    return run


def faster_engine(ct2_dir: Path, compute_type: str, language: str | None) -> Transcribe:
    from faster_whisper import WhisperModel

    d = decoding()
    model = WhisperModel(
        str(ct2_dir), device="cpu", compute_type=compute_type, cpu_threads=0, num_workers=1
    )

    def run(audio: Audio) -> tuple[str, int]:
        segments, _info = model.transcribe(
            audio,
            language=language,
            task="transcribe",
            beam_size=d.beam_size,
            best_of=BEST_OF,
            temperature=list(TEMPERATURES),
            compression_ratio_threshold=COMPRESSION_RATIO_THRESHOLD,
            log_prob_threshold=d.logprob_threshold,
            no_speech_threshold=d.no_speech_threshold,
            condition_on_previous_text=d.condition_on_previous_text,
            initial_prompt=None,
            word_timestamps=False,
            vad_filter=False,
        )
        decoded = list(segments)  # consuming the generator is what decodes
        text = "".join(s.text for s in decoded).strip()
        return text, sum(1 for s in decoded if s.temperature > 0)

    return run


def bench_bare(
    args: argparse.Namespace, clip: Audio, warm: Audio, reference: str
) -> list[ConfigResult]:
    cache = Path(args.cache_dir)
    ow = resolve_whisper_model(args.model, engine="openai-whisper", cache_dir=cache)
    fw = resolve_whisper_model(args.model, engine="faster-whisper", cache_dir=cache)
    assert ow.checkpoint is not None and fw.ct2_dir is not None
    print(f"weights: CT2 {fw.ct2_dir} (sha256 {fw.sha256[:12]}), checkpoint {ow.checkpoint}")
    assert ow.source_sha256 == fw.sha256, "openai-whisper and faster-whisper weights differ"
    audio_s = len(clip) / SAMPLE_RATE
    engines: list[tuple[ConfigResult, Transcribe]] = []
    specs = [
        ("bare openai-whisper", "openai-whisper", "float32 (torch)"),
        ("bare faster-whisper int8", "faster-whisper", "int8"),
        ("bare faster-whisper float32", "faster-whisper", "float32"),
    ]
    for name, engine, compute in specs:
        started = time.perf_counter()
        if engine == "openai-whisper":
            fn = openai_engine(ow.checkpoint, args.language)
        else:
            fn = faster_engine(fw.ct2_dir, compute, args.language)
        load_s = time.perf_counter() - started
        fn(warm)  # warm-up: first-call allocations, thread pools
        info = {"load_s": round(load_s, 2), "weights_sha256": fw.sha256}
        engines.append((ConfigResult(name, "bare", engine, compute, audio_s, info=info), fn))
        print(f"loaded {name} in {load_s:.1f}s", flush=True)
    # Interleave runs so slow drift in the machine's load hits every config alike.
    for index in range(args.runs):
        for result, fn in engines:

            def timed(_attempt: int, fn: Transcribe = fn) -> tuple[float, float, str, int]:
                time.sleep(1.0)  # let the other runtime's spinning OpenMP threads go idle
                load = load_average()[0]
                started = time.perf_counter()
                text, fallback = fn(clip)
                return time.perf_counter() - started, load, text, fallback

            (seconds, load, text, fallback), watch = quietly(args, result.name, timed)
            extra = {"load1": load, "fallback_segments": fallback, **watch}
            run = Run(seconds, text, wer(reference, text), extra)
            result.runs.append(run)
            print(
                f"  {result.name} run {index + 1}: {seconds:.2f}s (RTF {seconds / audio_s:.3f}, "
                f"WER {run.wer:.3f}, fallback segments {fallback})",
                flush=True,
            )
    results = [result for result, _ in engines]
    del engines
    gc.collect()
    return results


# --------------------------------------------------------------------------- service


def seed_knowledge_base(dest: Path) -> str:
    """A private knowledge base (python -m skyhigh.cli.seed), safe from edits to lancedb_data/."""
    try:
        subprocess.run(
            [sys.executable, "-m", "skyhigh.cli.seed", "--uri", str(dest)],
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=600,
        )
        return str(dest)
    except subprocess.SubprocessError as exc:
        print(f"seeding failed ({exc}); using {ROOT / 'lancedb_data'}", flush=True)
        shutil.copytree(ROOT / "lancedb_data", dest, dirs_exist_ok=True)
        return str(dest)


def git_state() -> dict[str, Any]:
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True).stdout

    return {
        "head": git("rev-parse", "HEAD").strip(),
        "dirty_files": len(git("status", "--short").splitlines()),
    }


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS / VmHWM (peak RSS) of a process, in MiB."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = round(int(rest.split()[0]) / 1024, 1)
    return values


_LIVE: list[ServerProcess] = []


@contextmanager
def running(env: dict[str, str], workdir: Path, label: str) -> Iterator[ServerProcess]:
    server = ServerProcess(env, workdir / f"{label}.log", extra_args=["--no-access-log"])
    _LIVE.append(server)
    try:
        server.start(timeout_s=300)
        yield server
    finally:
        server.stop()
        _LIVE.remove(server)


def server_env(args: argparse.Namespace, tmp: Path, **overrides: str) -> dict[str, str]:
    env = {
        "API_TOKENS": TOKEN,
        "DATABASE_URL": f"sqlite:///{tmp / 'events.db'}",
        "SPOOL_DIR": str(tmp / "spool"),
        "LANCEDB_URI": args.lancedb_uri,
        "WHISPER_MODEL": args.model,
        "MODEL_CACHE_DIR": str(Path(args.cache_dir)),
        "WORKER_CONCURRENCY": "1",
        "WHISPER_BEAM_SIZE": str(decoding().beam_size),
        "WHISPER_INSTANCES": "1",
    }
    env.update(overrides)
    return env


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def submit(
    http: httpx.Client, clip: bytes, event_id: str, language: str | None, lookup: bool = True
) -> None:
    files = {"file": ("clip.wav", clip, "audio/wav")}
    data = {"event_id": event_id, "lookup": "true" if lookup else "false"}
    if language is not None:
        data["language"] = language
    response = http.post("/events/upload", files=files, data=data)
    if response.status_code != 202:
        raise RuntimeError(f"upload refused: {response.status_code} {response.text[:300]}")


def wait_done(http: httpx.Client, event_id: str, poll_s: float, timeout_s: float = 900) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = http.get(f"/events/{event_id}").json()
        if record["status"] in TERMINAL:
            if record["status"] != "completed":
                raise RuntimeError(f"{event_id} failed: {record.get('error')}")
            return record
        time.sleep(poll_s)
    raise RuntimeError(f"{event_id} did not finish in {timeout_s}s")


def client(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=AUTH, timeout=60)


def bench_service(
    args: argparse.Namespace,
    tmp: Path,
    clip: bytes,
    warm: bytes,
    audio_s: float,
    reference: str,
    engine: str,
    compute: str,
) -> list[ConfigResult]:
    """One server; for each client polling interval, --runs events (interleaved)."""
    label = f"service-{engine}-{compute}"
    workdir = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=tmp))
    overrides = {"WHISPER_ENGINE": engine}
    if engine == "faster-whisper":
        overrides["WHISPER_COMPUTE_TYPE"] = compute
    env = server_env(args, workdir, **overrides)
    polls = [float(v) for v in str(args.poll_ms).split(",")]
    results = {
        poll: ConfigResult(
            f"service {engine} {compute}, poll {poll:g} ms", "service", engine, compute, audio_s
        )
        for poll in polls
    }
    with running(env, workdir, label) as server:
        after_load = proc_memory(server.pid)
        with client(server) as http:
            submit(http, warm, "warm-up", args.language)
            wait_done(http, "warm-up", 0.1)
            for index in range(args.runs):
                for poll, result in results.items():

                    def timed(
                        attempt: int, index: int = index, poll: float = poll
                    ) -> tuple[float, float, Any]:
                        time.sleep(1.0)
                        load = load_average()[0]
                        event_id = f"bench-{index}-{poll:g}-{attempt}"
                        started = time.perf_counter()
                        submit(http, clip, event_id, args.language)
                        record = wait_done(http, event_id, poll / 1000)
                        return time.perf_counter() - started, load, record

                    (client_s, load, record), watch = quietly(args, result.name, timed)
                    created, begun = _ts(record["created_at"]), _ts(record["started_at"])
                    finished = _ts(record["finished_at"])
                    text = record["result"]["transcript"]["text"]
                    run = Run(
                        (finished - created).total_seconds(),
                        text,
                        wer(reference, text),
                        {
                            "client_wall_s": round(client_s, 3),
                            "queue_wait_s": round((begun - created).total_seconds(), 4),
                            "timings": record["result"]["timings"],
                            "matches": len(record["result"]["matches"]),
                            "load1": load,
                            **watch,
                        },
                    )
                    result.runs.append(run)
                    print(
                        f"  {result.name} run {index + 1}: accept→completed {run.seconds:.2f}s, "
                        f"client {client_s:.2f}s, timings {run.extra['timings']}",
                        flush=True,
                    )
        after_runs = proc_memory(server.pid)
        with client(server) as http:
            # What the client's polling costs the server: CPU per request on the idle server.
            request_cpu = {
                "get_event_ms": request_cpu_ms(server, http, f"/events/{record['event_id']}"),
                "health_ms": request_cpu_ms(server, http, "/health"),
            }
    for poll, result in results.items():
        result.info.update(
            startup_s=round(server.start_s, 2),
            poll_ms=poll,
            memory_after_load_mib=after_load,
            memory_after_runs_mib=after_runs,
            server_cpu_per_request=request_cpu,
            model=record["result"]["model"],
        )
    return list(results.values())


def request_cpu_ms(server: ServerProcess, http: httpx.Client, path: str, count: int = 300) -> float:
    """Server CPU milliseconds per sequential GET `path` (server otherwise idle)."""
    before = process_ticks(server.pid)
    for _ in range(count):
        http.get(path).raise_for_status()
    return round((process_ticks(server.pid) - before) / _CLK_TCK * 1000 / count, 3)


# --------------------------------------------------------------------------- /health


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]  # nearest-rank


def bench_health(
    args: argparse.Namespace, tmp: Path, clip: bytes, warm: bytes, instances: int, threads: int
) -> dict[str, Any]:
    label = f"health-i{instances}-t{threads}"
    workdir = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=tmp))
    overrides = {"WORKER_CONCURRENCY": "2", "WHISPER_INSTANCES": str(instances)}
    if threads:
        overrides["WHISPER_CPU_THREADS"] = str(threads)
    env = server_env(args, workdir, WHISPER_ENGINE="openai-whisper", **overrides)
    out: dict[str, Any] = {
        "whisper_instances": instances,
        "worker_concurrency": 2,
        "whisper_cpu_threads": threads or "default",
    }
    with running(env, workdir, label) as server:
        out["memory_after_load_mib"] = proc_memory(server.pid)
        with client(server) as http, httpx.Client(base_url=server.url) as probe:
            submit(http, warm, "warm-up", args.language)
            wait_done(http, "warm-up", 0.1)

            def phase(attempt: int) -> tuple[list[float], list[float], float, list[Any], float]:
                idle = [_timed_get(probe, "/health") for _ in range(100)]
                ids = [f"long-{attempt}-0", f"long-{attempt}-1"]
                started = time.perf_counter()
                for event_id in ids:
                    submit(http, clip, event_id, args.language)
                while not _all_processing(http, ids):
                    time.sleep(0.02)
                samples: list[float] = []
                load = load_average()[0]
                done = False
                while len(samples) < args.health_samples and not done:
                    batch = []
                    for _ in range(25):
                        tick = time.perf_counter()
                        batch.append(_timed_get(probe, "/health"))
                        time.sleep(max(0.0, 0.02 - (time.perf_counter() - tick)))
                    if _all_processing(http, ids):
                        samples += batch  # only batches that provably overlapped both events
                    else:
                        done = True
                records = [wait_done(http, event_id, 0.2) for event_id in ids]
                return idle, samples, load, records, time.perf_counter() - started

            (idle, samples, load, records, both_s), watch = quietly(args, label, phase)
        out["memory_after_runs_mib"] = proc_memory(server.pid)
    out["load1_during"] = load
    out.update(watch)
    out["idle"] = _latency_summary(idle)
    out["busy"] = _latency_summary(samples)
    out["both_done_s"] = round(both_s, 2)
    out["events"] = [
        {
            "accept_to_completed_s": round(
                (_ts(r["finished_at"]) - _ts(r["created_at"])).total_seconds(), 2
            ),
            "timings": r["result"]["timings"],
        }
        for r in records
    ]
    print(f"  /health {label}: {out['busy']} (idle {out['idle']})", flush=True)
    return out


def _timed_get(http: httpx.Client, path: str) -> float:
    started = time.perf_counter()
    response = http.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"{path} answered {response.status_code}")
    return elapsed


def _all_processing(http: httpx.Client, ids: list[str]) -> bool:
    return all(http.get(f"/events/{i}").json()["status"] == "processing" for i in ids)


def _latency_summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50), 2),
        "p95_ms": round(percentile(values, 95), 2),
        "p99_ms": round(percentile(values, 99), 2),
        "max_ms": round(max(values), 2),
    }


# --------------------------------------------------------------------------- report


def targets(results: dict[str, ConfigResult], health: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    ow, fw8 = results["bare openai-whisper"], results["bare faster-whisper int8"]
    for engine, compute, bare in (
        ("openai-whisper", "float32", ow),
        ("faster-whisper", "int8", fw8),
    ):
        prefix = f"service {engine} {compute}, poll "
        for name, service in results.items():
            if not name.startswith(prefix):
                continue
            for stat in ("best", "mean"):
                ratio = getattr(service, f"{stat}_s") / getattr(bare, f"{stat}_s")
                rows.append({
                    "target": f"{name} ≤ 1.10 × bare engine [{stat}]",
                    "value": round(ratio, 3),
                    "met": ratio <= 1.10,
                })  # fmt: skip
    for stat in ("best", "mean"):
        speedup = getattr(ow, f"{stat}_s") / getattr(fw8, f"{stat}_s")
        rows.append({
            "target": f"faster-whisper int8 ≥ 4 × openai-whisper [{stat}]",
            "value": round(speedup, 2),
            "met": speedup >= 4.0,
        })  # fmt: skip
    delta = (fw8.runs[0].wer - ow.runs[0].wer) * 100
    rows.append({
        "target": "WER(int8) - WER(openai-whisper) within 1 point",
        "value": round(delta, 2),
        "met": abs(delta) <= 1.0 or delta < 0,
    })  # fmt: skip
    for h in health:
        if h["whisper_instances"] == 2 and h["whisper_cpu_threads"] == "default":
            p99 = h["busy"].get("p99_ms", float("nan"))
            rows.append({
                "target": "/health p99 ≤ 50 ms, two transcriptions (2 instances)",
                "value": p99,
                "met": p99 <= 50,
            })  # fmt: skip
    peaks = {
        f"service {r.engine} {r.compute}": r.info["memory_after_runs_mib"]["VmHWM"]
        for r in results.values()
        if r.kind == "service"
    }
    for name, peak in peaks.items():
        rows.append({
            "target": f"peak RSS, API process, base + MiniLM ≤ 1.2 GB ({name})",
            "value": f"{peak:.0f} MiB ({peak * 1.048576:.0f} MB)",
            "met": peak * 1024 * 1024 <= 1.2e9,
        })  # fmt: skip
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| config | audio s | best s | mean s | RTF best | RTF mean | × realtime | WER |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in report["summary"].items():
        mark = " (*)" if s["contended_runs"] else ""
        lines.append(
            f"| {name}{mark} | {report['audio_s']:.1f} | {s['best_s']:.2f} | {s['mean_s']:.2f} | "
            f"{s['rtf_best']:.3f} | {s['rtf_mean']:.3f} | {s['x_realtime_best']:.1f} | "
            f"{s['wer'] * 100:.1f}% |"
        )
    service_rows = [
        "",
        "| service config | run | accept→completed s | client wall s | decode s | transcribe s "
        "| embed s | lookup s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for config in report["configs"]:
        if config["kind"] != "service":
            continue
        for index, run in enumerate(config["runs"]):
            t = run["extra"]["timings"]
            service_rows.append(
                f"| {config['name']} | {index + 1} | {run['seconds']:.2f} | "
                f"{run['extra']['client_wall_s']:.2f} | {t.get('decode_s', 0):.3f} | "
                f"{t.get('transcribe_s', 0):.2f} | {t.get('embed_s', 0):.3f} | "
                f"{t.get('lookup_s', 0):.3f} |"
            )
    lines += service_rows
    lines += ["", "(*) a run overlapped other benchmarks/builds/tests after the retries."]
    lines += ["", "| target | value | met |", "|---|---:|---|"]
    for row in report["targets"]:
        lines.append(f"| {row['target']} | {row['value']} | {'yes' if row['met'] else 'NO'} |")
    lines += [
        "",
        "| /health (WORKER_CONCURRENCY=2) | n | p50 ms | p95 ms | p99 ms | max ms | idle p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for h in report["health"]:
        b = h["busy"]
        lines.append(
            f"| WHISPER_INSTANCES={h['whisper_instances']}, threads {h['whisper_cpu_threads']}"
            f"{' (*)' if h.get('contended') else ''} "
            f"| {b.get('n', 0)} | {b.get('p50_ms')} | {b.get('p95_ms')} | {b.get('p99_ms')} | "
            f"{b.get('max_ms')} | {h['idle'].get('p99_ms')} |"
        )
    lines += [
        "",
        "| API process memory (MiB) | RSS after load | peak (VmHWM) after load "
        "| RSS after runs | peak (VmHWM) after runs |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, mem in report["memory"].items():
        a, b = mem["after_load"], mem["after_runs"]
        lines.append(f"| {label} | {a['VmRSS']} | {a['VmHWM']} | {b['VmRSS']} | {b['VmHWM']} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="base")
    parser.add_argument(
        "--clip",
        choices=["varied", "jfk"],
        default="varied",
        help="varied: jfk.wav + TTS passages (default); jfk: jfk.wav repeated --repeats times",
    )
    parser.add_argument("--repeats", type=int, default=6, help="--clip jfk: copies (11 s each)")
    parser.add_argument("--seconds", type=float, default=55.0, help="--clip varied: at least")
    parser.add_argument("--runs", type=int, default=2, help="timed runs per config")
    parser.add_argument("--language", default=None, help="fix the language (default: detect)")
    parser.add_argument(
        "--poll-ms",
        default="20,500",
        help="client status polling intervals, comma list (request.py --wait polls every 500)",
    )
    parser.add_argument("--health-samples", type=int, default=400)
    parser.add_argument(
        "--health-variants",
        default="2:0,1:0,2:1",
        help="comma list of INSTANCES:CPU_THREADS for the /health test (0 = default threads)",
    )
    parser.add_argument(
        "--beam-size", type=int, default=0, help="override WHISPER_BEAM_SIZE (0: the default)"
    )
    parser.add_argument("--skip-bare", action="store_true")
    parser.add_argument("--skip-service", action="store_true")
    parser.add_argument("--skip-health", action="store_true")
    parser.add_argument(
        "--wait-quiet-s",
        type=float,
        default=1200.0,
        help="before each timed block, wait up to this long for no intake_load/docker build/pytest",
    )
    parser.add_argument(
        "--wait-total-s", type=float, default=2400.0, help="stop waiting once this much is spent"
    )
    parser.add_argument(
        "--retries", type=int, default=2, help="redo a timed block that overlapped other work"
    )
    parser.add_argument(
        "--cache-dir",
        default=os.environ.get("SKYHIGH_TEST_MODEL_CACHE", str(Path.home() / ".cache/skyhigh")),
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "speech.json"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    _WAITED[1] = args.wait_total_s
    if args.beam_size:
        BEAM_SIZE.append(args.beam_size)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    quiet = wait_until_quiet(args.wait_quiet_s)
    print(f"quiet check: {quiet}", flush=True)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="speech-bench-") as tmp_name:
        tmp = Path(tmp_name)
        clip_path, reference, clip_description = build_clip(
            args.clip, args.repeats, args.seconds, tmp
        )
        clip, warm = decode(clip_path), decode(DATA / "jfk.wav")
        audio_s = len(clip) / SAMPLE_RATE
        print(f"clip: {audio_s:.2f}s: {clip_description}", flush=True)
        results: dict[str, ConfigResult] = {}

        if not (args.skip_service and args.skip_health):
            args.lancedb_uri = seed_knowledge_base(tmp / "lancedb")
        if not args.skip_bare:
            for result in bench_bare(args, clip, warm, reference):
                results[result.name] = result
        services: list[tuple[str, str]] = []
        if not args.skip_service:
            services = [("openai-whisper", "float32"), ("faster-whisper", "int8")]
        clip_bytes, warm_bytes = clip_path.read_bytes(), (DATA / "jfk.wav").read_bytes()
        for engine, compute in services:
            for result in bench_service(
                args, tmp, clip_bytes, warm_bytes, audio_s, reference, engine, compute
            ):
                results[result.name] = result
        health: list[dict[str, Any]] = []
        if not args.skip_health:
            for variant in args.health_variants.split(","):
                instances, threads = (int(v) for v in variant.split(":"))
                health.append(bench_health(args, tmp, clip_bytes, warm_bytes, instances, threads))
    memory: dict[str, Any] = {}
    for result in results.values():
        if result.kind == "service":
            memory[f"service {result.engine} {result.compute}, 1 instance, 1 worker"] = {
                "after_load": result.info["memory_after_load_mib"],
                "after_runs": result.info["memory_after_runs_mib"],
            }
    for h in health:
        label = (f"service openai-whisper, {h['whisper_instances']} instance(s), "
                 f"2 workers, threads {h['whisper_cpu_threads']}")  # fmt: skip
        memory[label] = {"after_load": h["memory_after_load_mib"],
                         "after_runs": h["memory_after_runs_mib"]}  # fmt: skip
    report: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "started": datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "machine": machine(),
        "git": git_state(),
        "quiet_check": quiet,
        "waited_total_s": round(_WAITED[0], 1),
        "load_average_end": load_average(),
        "model": args.model,
        "audio_s": audio_s,
        "clip": clip_description,
        "reference_words": len(reference.split()),
        "rtf_definition": "RTF = processing seconds / audio seconds (lower is better)",
        "decoding": asdict(decoding()),
        "summary": {name: r.summary() for name, r in results.items()},
        "configs": [asdict(r) for r in results.values()],
        "health": health,
        "memory": memory,
    }
    if "bare openai-whisper" in results and "bare faster-whisper int8" in results:
        report["targets"] = targets(results, health)
    else:
        report["targets"] = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    table = markdown(report)
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"\nwrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    try:
        main()
    finally:
        for live in list(_LIVE):
            live.stop()
