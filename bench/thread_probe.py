"""Probe: is Whisper slower on a worker thread than on the main thread, and why?

Each configuration runs in a fresh child process (OpenMP reads its environment once, at load):
the child loads one engine through the service's own loader (skyhigh.speech.pool), warms
it up, then times `transcribe(jfk)` --runs times on the thread the placement names:

* `main`: everything on the main thread;
* `worker-after-main`: a warm-up on the main thread, then the timed runs on a new thread (the
  first worker-thread probe: the main thread has an OpenMP team of its own by then);
* `worker`: the main thread only loads; warm-up and runs on one worker thread;
* `worker+embed`: like `worker`, but another thread ran one MiniLM-sized torch op first and
  stays alive (as the lifespan's loading thread or a second worker does in the service);
* `worker-only`: the model is loaded, warmed up and run on one worker thread; the main thread
  never touches torch (the only OpenMP team in the process is the worker's);
* `worker+model`: like `worker`, but a second model (tiny.en, same engine and threads) was
  loaded and used once first and stays loaded, idle (a realtime model, a second instance).

SkyHigh sets OMP_WAIT_POLICY=ACTIVE and GOMP_SPINCOUNT=300000 unless either is set
(skyhigh.speech.threads.OPENMP_WAIT); `--env GOMP_SPINCOUNT=300000` alone is libgomp's own
default (the same spin count, and the throttled wait of 100 spins).

With --env NAME=VALUE a configuration runs with that variable set as well. --load caller loads
the model on the calling thread (as first shipped); --load passing (the default) loads it the way
the service does now, on a thread that ends (skyhigh.speech.threads.on_passing_thread).
Prints one line per configuration (median seconds, every run, threads alive) and writes JSON to
--out if given.

    uv run python -m bench.thread_probe --engine openai-whisper --model base --runs 5
    uv run python -m bench.thread_probe --engine openai-whisper --env OMP_WAIT_POLICY=PASSIVE
    uv run python -m bench.thread_probe --engine faster-whisper --cpu-threads 0 2 4
    uv run python -m bench.thread_probe --engine faster-whisper --placement worker worker+model \
        --env GOMP_SPINCOUNT=300000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PLACEMENTS = ("main", "worker-after-main", "worker", "worker+embed", "worker-only", "worker+model")


def _on_thread(fn: Callable[[], Any]) -> Any:
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.update(value=fn()), name="probe-worker")
    thread.start()
    thread.join()
    return box["value"]


def child(args: argparse.Namespace) -> dict[str, Any]:
    from skyhigh.config import Settings
    from skyhigh.speech.decode import load_audio
    from skyhigh.speech.pool import TranscriberPool
    from skyhigh.speech.protocol import TranscribeOptions
    from skyhigh.speech.registry import engine_class
    from skyhigh.speech.weights import resolve_whisper_model

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        whisper_engine=args.engine,
        whisper_model=args.model,
        whisper_cpu_threads=args.cpu_threads[0],
        whisper_vad=args.vad,
    )
    placement = args.placement

    def load() -> Any:
        if args.load == "caller":  # as first shipped: the loading thread keeps a team
            speech = settings.speech
            resolved = resolve_whisper_model(
                speech.whisper_model, engine=speech.whisper_engine, cache_dir=speech.model_cache_dir
            )
            return engine_class(speech.whisper_engine).load(resolved, speech)
        return TranscriberPool.from_settings(settings.speech)  # on a thread that ends (the fix)

    transcriber = _on_thread(load) if placement == "worker-only" else load()
    audio = load_audio(ROOT / "tests" / "data" / "jfk.wav", max_seconds=60)
    options = TranscribeOptions(language="en")

    def run() -> float:
        started = time.perf_counter()
        transcriber.transcribe(audio, options)
        return time.perf_counter() - started

    def runs() -> list[float]:
        run()  # warm-up on the timed thread
        return [run() for _ in range(args.runs)]

    keep_alive = threading.Event()
    if placement == "main":
        times = runs()
    elif placement == "worker-after-main":
        run()
        times = _on_thread(runs)
    elif placement == "worker":
        times = _on_thread(runs)
    elif placement == "worker-only":
        times = _on_thread(runs)  # a second thread: the loading thread has exited
    elif placement == "worker+model":  # an idle model whose decoder thread has an OpenMP team
        second = TranscriberPool.from_settings(
            settings.speech.model_copy(update={"whisper_model": "tiny.en"})
        )
        second.transcribe(audio, options)
        times = _on_thread(runs)
    else:  # worker+embed: another live thread has touched torch (an OpenMP team of its own)
        import torch

        ready = threading.Event()

        def other() -> None:
            torch.nn.functional.linear(torch.ones(64, 384), torch.ones(384, 384))
            ready.set()
            keep_alive.wait()

        threading.Thread(target=other, daemon=True).start()
        ready.wait()
        times = _on_thread(runs)
    threads = len(os.listdir("/proc/self/task"))
    keep_alive.set()
    return {"times": times, "median_s": statistics.median(times), "threads": threads}


def run_config(args: argparse.Namespace, placement: str, env: dict[str, str], threads: int) -> Any:
    command = [
        sys.executable,
        "-m",
        "bench.thread_probe",
        "--child",
        "--engine",
        args.engine,
        "--model",
        args.model,
        "--runs",
        str(args.runs),
        "--placement",
        placement,
        "--cpu-threads",
        str(threads),
        *(["--vad"] if args.vad else []),
        "--load",
        args.load,
    ]
    child_env = {**os.environ, **env}
    done = subprocess.run(
        command, cwd=ROOT, env=child_env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"child failed ({placement}, {env}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="openai-whisper")
    parser.add_argument("--model", default="base")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--placement", nargs="*", default=list(PLACEMENTS), choices=PLACEMENTS)
    parser.add_argument("--env", nargs="*", default=[], help="NAME=VALUE, one config each")
    parser.add_argument("--cpu-threads", nargs="*", type=int, default=[0])
    parser.add_argument("--vad", action="store_true", help="WHISPER_VAD on (default: off)")
    parser.add_argument(
        "--load",
        choices=("caller", "passing"),
        default="passing",
        help="load on the calling thread (as first shipped) or on a passing thread (now)",
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        args.placement = args.placement[0]
        print(json.dumps(child(args)))
        return
    envs: list[dict[str, str]] = [{}]
    for item in args.env:
        name, _, value = item.partition("=")
        envs.append({name: value})
    results = []
    print(f"load average before: {os.getloadavg()}", flush=True)
    for threads in args.cpu_threads:
        for env in envs:
            for placement in args.placement:
                result = run_config(args, placement, env, threads)
                row = {
                    "placement": placement,
                    "load": args.load,
                    "env": env,
                    "cpu_threads": threads,
                    **result,
                }
                results.append(row)
                runs = ", ".join(f"{t:.2f}" for t in result["times"])
                print(
                    f"{args.engine:15} load={args.load:7} threads={threads} {placement:18} "
                    f"{env or ''!s:28} "
                    f"median {result['median_s']:.3f} s  ({runs})  threads alive "
                    f"{result['threads']}  load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
