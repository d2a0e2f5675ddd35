"""Where eight mixed short clips' time goes on faster-whisper: encoder windows against decoding.

The workload is bench.batch_bench's (a) at --scale 0.25: eight clips of 2.5-75 s (205 s of real
speech with pauses), all submitted at once. Each setting loads one `TranscriberPool` in-process
(as the service does) and transcribes the eight clips on --concurrency threads (the service's
WORKER_CONCURRENCY); `WhisperModel.encode` is timed, so the split says whether windows
(encoder) or the rest (mostly `generate`, the decoder) cost the time.

    uv run python -m bench.short_clips_probe --settings defaults beam1 cross8

Prints one JSON row per setting: audio-s/s, WER, windows encoded, encode and generate seconds,
the 1-minute load before and after. No server: the figure is an upper bound for the service.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from faster_whisper import WhisperModel

from bench.batch_bench import corpus_wer, workloads
from skyhigh.config import Settings
from skyhigh.speech.pool import TranscriberPool
from skyhigh.speech.protocol import TranscribeOptions

SETTINGS: Final[dict[str, dict[str, Any]]] = {
    "defaults": {},
    "beam1": {"whisper_beam_size": 1},
    "batch8": {"whisper_batch_size": 8},
    "cross8": {"whisper_cross_request_batching": True, "whisper_batch_size": 8},
    # Two model instances of one thread each: two clips decode at once, one per core.
    "instances2-threads1": {"whisper_instances": 2, "whisper_cpu_threads": 1},
    "cross8-beam1": {
        "whisper_cross_request_batching": True,
        "whisper_batch_size": 8,
        "whisper_beam_size": 1,
    },
}


class Timed:
    """Wall seconds and calls spent in one model method (summed over threads and instances)."""

    def __init__(self) -> None:
        self.seconds, self.calls, self.rows = 0.0, 0, 0
        self.inner: Any = None
        self._lock = threading.Lock()

    def wrap(self, owner: Any, name: str) -> None:
        inner = self.inner = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                with self._lock:
                    self.seconds += time.perf_counter() - started
                    self.calls += 1
                    self.rows += len(args[1])  # (self, features)

        setattr(owner, name, timed)


def probe(name: str, concurrency: int, clips: list[Any]) -> dict[str, Any]:
    # One instance: without cross-request batching it serves one clip at a time, as the
    # service does; with it, every thread's chunks meet in its batcher.
    overrides = {"whisper_engine": "faster-whisper", **SETTINGS[name]}
    settings = Settings(_env_file=None, **overrides)  # type: ignore[call-arg]
    pool = TranscriberPool.from_settings(settings.speech)
    encode = Timed()
    try:
        pool.transcribe(clips[0].audio, TranscribeOptions())  # warm-up
        encode.wrap(WhisperModel, "encode")  # the class: CTranslate2's own objects are sealed
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as threads:
            texts = list(
                threads.map(lambda c: pool.transcribe(c.audio, TranscribeOptions()).text, clips)
            )
        wall = time.perf_counter() - started
    finally:
        pool.close()
        if encode.inner is not None:
            WhisperModel.encode = encode.inner  # type: ignore[method-assign]
    audio_s = sum(clip.seconds for clip in clips)
    return {
        "setting": name,
        "concurrency": concurrency,
        "audio_s": round(audio_s, 1),
        "wall_s": round(wall, 2),
        "audio_s_per_s": round(audio_s / wall, 2),
        "wer": round(corpus_wer([c.reference for c in clips], texts), 4),
        "windows_encoded": encode.rows,
        "encode_calls": encode.calls,
        "encode_s": round(encode.seconds, 2),
        # the rest of the wall time: generate (decoding), VAD, features, assembly
        "other_s": round(wall - encode.seconds, 2),
        "load": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["defaults"], choices=sorted(SETTINGS))
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--scale", type=float, default=0.25)
    args = parser.parse_args()
    clips = workloads(args.scale)["mixed"]
    for name in args.settings:
        print(json.dumps(probe(name, args.concurrency, clips)), flush=True)


if __name__ == "__main__":
    main()
