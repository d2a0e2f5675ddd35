"""Serving footprint benchmark: torch vs the int8 ONNX embedder, memory, images.

In one run (each phase can be left out):

1. knowledge: query embedding + KnowledgeBase.search (k=10) at --rows rows, p50/p95, for the
   torch and the onnx backend, in alternating blocks so load drift hits both alike. The table
   holds the knowledge benchmark's corpus (bench/knowledge_corpus.py, embedded with torch and
   cached by `bench/knowledge_bench.py --prepare-only`), with the service's vector index built
   over all rows (what the writer converges to) and its FTS index. recall@10: the service's
   search against exact search with the same query vector (what the index loses); agreement@10:
   against exact search with torch's query vector (what the index and the int8 model lose
   together, on a corpus whose 10th and 11th neighbours are 0.0007 apart).
2. rss: peak RSS (VmHWM) of the whole service, `uvicorn main:app` with the default Whisper
   model (base), after one transcription (tests/data/jfk.wav) and 100 query events, for each
   --configs entry: torch = openai-whisper + torch embedder (the old default), default =
   openai-whisper + onnx embedder, torch-free = faster-whisper + onnx embedder.
3. docker: size of skyhigh:latest and skyhigh:slim and cold start (`docker run` → /ready 200),
   --cold-starts times each, when Docker and the images are there (scripts/docker-smoke.sh
   builds them).

    uv run python -m bench.serving_bench --out bench/out/serving.json
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from bench.knowledge_corpus import queries
from skyhigh.config import Settings
from skyhigh.knowledge.embedder import Embedder, load_embedder
from skyhigh.knowledge.search import KnowledgeBase
from skyhigh.knowledge.tables import (
    create_text_index,
    create_vector_index,
    documents_schema,
)
from tests.support.ports import free_port
from tests.support.server import serve_command, wait_ready

ROOT = Path(__file__).resolve().parent.parent

Vectors = npt.NDArray[np.float32]
K = 10
TABLE = "knowledge"
CONFIGS = {
    "torch": {"WHISPER_ENGINE": "openai-whisper", "EMBEDDING_BACKEND": "torch"},
    "default": {"WHISPER_ENGINE": "openai-whisper", "EMBEDDING_BACKEND": "onnx"},
    "torch-free": {"WHISPER_ENGINE": "faster-whisper", "EMBEDDING_BACKEND": "onnx"},
}
IMAGES = {"default": "skyhigh:latest", "slim": "skyhigh:slim"}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def summary(values: list[float]) -> dict[str, float]:
    array = np.asarray(values)
    return {f"p{q}": round(float(np.percentile(array, q)), 2) for q in (50, 95)}


# --------------------------------------------------------------------------- 1. knowledge


def corpus_table(cache: Path, rows: int, seed: int, settings: Settings) -> KnowledgeBase:
    """The cached corpus in a LanceDB table with both indexes, built once and reused."""
    folder = cache / f"knowledge_corpus_v1_{rows}_s{seed}"
    if not (folder / "vectors.npy").exists():
        raise SystemExit(
            f"no cached corpus in {folder}: run `bench/knowledge_bench.py --rows {rows} "
            "--prepare-only` first"
        )
    uri = cache / f"serving_lancedb_{rows}"
    kb = KnowledgeBase(
        str(uri),
        default_table=TABLE,
        nprobes=settings.vector_nprobes,
        refine_factor=settings.vector_refine_factor,
    )
    if TABLE in kb.table_names():
        return kb
    texts = json.loads((folder / "texts.json").read_text())
    vectors = np.load(folder / "vectors.npy")
    data = pa.Table.from_pylist(
        [
            {
                "id": f"r{i:06d}",
                "document_id": f"r{i:06d}",
                "chunk": 0,
                "title": "Support notes",
                "text": text,
                "content_sha256": "0" * 64,
                "vector": vector.tolist(),
            }
            for i, (text, vector) in enumerate(zip(texts, vectors, strict=True))
        ],
        schema=documents_schema(int(vectors.shape[1])),
    )
    began = time.perf_counter()
    table = kb.create_table(TABLE, documents_schema(int(vectors.shape[1])))
    table.add(data)
    create_text_index(table)
    create_vector_index(table, settings.vector_index_type)
    print(f"   built {rows}-row table in {time.perf_counter() - began:.0f} s", flush=True)
    return kb


def exact_top(corpus: Vectors, query_vectors: Vectors) -> list[set[str]]:
    scores = query_vectors @ corpus.T
    top = np.argpartition(-scores, K, axis=1)[:, :K]
    return [{f"r{i:06d}" for i in row} for row in top]


def overlap(found: list[list[str]], truth: list[set[str]]) -> float:
    shares = [len(set(ids) & expected) / K for ids, expected in zip(found, truth, strict=True)]
    return round(float(np.mean(shares)), 4)


def knowledge_phase(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]  # defaults, not .env
    kb = corpus_table(args.cache, args.rows, args.seed, settings)
    vectors = np.load(args.cache / f"knowledge_corpus_v1_{args.rows}_s{args.seed}" / "vectors.npy")
    questions = queries(args.queries, args.query_seed)
    embedders: dict[str, Embedder] = {
        backend: load_embedder(
            settings.knowledge.model_copy(update={"embedding_backend": backend}),
            cache_dir=settings.model_cache_dir,
        )
        for backend in ("torch", "onnx")
    }
    query_vectors = {b: e.embed(questions) for b, e in embedders.items()}
    timings: dict[str, dict[str, list[float]]] = {
        b: {"embed": [], "vector": [], "hybrid": []} for b in embedders
    }
    found: dict[str, list[list[str]]] = {b: [] for b in embedders}
    for question in questions[: args.warmup]:  # warm both, caches and index pages
        for embedder in embedders.values():
            vector = embedder.embed([question])[0]
            kb.search(vector, text=question, k=K)
    load_before = load_average()
    block = 20
    for start in range(0, len(questions), block):
        for backend, embedder in embedders.items():
            for question in questions[start : start + block]:
                began = time.perf_counter()
                vector = embedder.embed([question])[0]
                embedded = time.perf_counter()
                matches = kb.search(vector, text=question, k=K, mode="vector")
                searched = time.perf_counter()
                kb.search(vector, text=question, k=K, mode="hybrid")
                fused = time.perf_counter()
                timings[backend]["embed"].append((embedded - began) * 1000)
                timings[backend]["vector"].append((searched - embedded) * 1000)
                timings[backend]["hybrid"].append((fused - searched) * 1000)
                found[backend].append([m.id for m in matches])
    reference = exact_top(vectors, query_vectors["torch"])
    result: dict[str, Any] = {
        "rows": args.rows,
        "queries": len(questions),
        "index": settings.vector_index_type,
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }
    for backend, t in timings.items():
        totals = [e + s for e, s in zip(t["embed"], t["vector"], strict=True)]
        result[backend] = {
            "total_ms": summary(totals),
            "embed_ms": summary(t["embed"]),
            "search_ms": summary(t["vector"]),
            "hybrid_search_ms": summary(t["hybrid"]),
            "recall_at_10": overlap(found[backend], exact_top(vectors, query_vectors[backend])),
            "agreement_with_torch_at_10": overlap(found[backend], reference),
        }
    cosine = np.sum(query_vectors["torch"] * query_vectors["onnx"], axis=1)
    result["query_cosine_onnx_vs_torch"] = {
        "min": round(float(cosine.min()), 4),
        "mean": round(float(cosine.mean()), 4),
    }
    return result


# --------------------------------------------------------------------------- 2. rss


def peak_rss(config: dict[str, str], queries_n: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="skyhigh-rss-"))
    shutil.copytree(ROOT / "lancedb_data", tmp / "lancedb_data")
    token = secrets.token_urlsafe(24)
    port = free_port()
    env = {
        **os.environ,
        "API_TOKENS": token,
        "DATABASE_URL": f"sqlite:///{tmp / 'events.db'}",
        "SPOOL_DIR": str(tmp / "spool"),
        "LANCEDB_URI": str(tmp / "lancedb_data"),
        "LOG_LEVEL": "WARNING",
        **config,
    }
    started = time.perf_counter()
    server = subprocess.Popen(
        serve_command(port),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "server.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            wait_ready(url, server, log_path=tmp / "server.log", timeout_s=600)
            ready_s = time.perf_counter() - started
            audio = base64.b64encode((ROOT / "tests" / "data" / "jfk.wav").read_bytes()).decode()
            events = [("speech-0", "speech", {"audio_base64": audio, "k": 3})]
            events += [
                (f"query-{i}", "query", {"text": q, "k": 5})
                for i, q in enumerate(queries(queries_n, 11))
            ]
            for event_id, event_type, data in events:
                body = {"event_id": event_id, "event_type": event_type, "event_data": data}
                assert client.post("/events/", json=body).status_code == 202
            for event_id, _, _ in events:
                while (record := client.get(f"/events/{event_id}").json())["status"] not in (
                    "completed",
                    "failed",
                ):
                    time.sleep(0.1)
                assert record["status"] == "completed", record
            status = (Path("/proc") / str(server.pid) / "status").read_text()
            memory = {
                line.split(":")[0]: int(line.split()[1]) * 1024
                for line in status.splitlines()
                if line.startswith(("VmHWM", "VmRSS"))
            }
            modules = client.get("/status").json().get("models")
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "config": config,
        "ready_s": round(ready_s, 1),
        "peak_rss_mb": round(memory["VmHWM"] / 1e6),
        "rss_after_mb": round(memory["VmRSS"] / 1e6),
        "models": modules,
    }


# --------------------------------------------------------------------------- 3. docker


def docker_phase(cold_starts: int) -> dict[str, Any]:
    if shutil.which("docker") is None:
        return {"skipped": "no docker"}
    result: dict[str, Any] = {}
    for target, image in IMAGES.items():
        inspect = subprocess.run(
            ["docker", "image", "inspect", "-f", "{{.Size}}", image], capture_output=True, text=True
        )
        if inspect.returncode != 0:
            result[target] = {"skipped": f"no image {image}"}
            continue
        starts = []
        for _ in range(cold_starts):
            port = free_port()
            name = f"skyhigh-bench-{secrets.token_hex(4)}"
            began = time.perf_counter()
            subprocess.run(
                [
                    "docker",
                    "run",
                    "-d",
                    "--rm",
                    "--name",
                    name,
                    "--network=host",
                    "-e",
                    f"API_TOKENS={secrets.token_urlsafe(24)}",
                    "-e",
                    f"UVICORN_PORT={port}",
                    image,
                ],
                check=True,
                capture_output=True,
            )
            try:
                while True:
                    try:
                        ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
                        if ready.status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.perf_counter() - began > 300:
                        raise SystemExit(f"{image} not ready after 300 s")
                    time.sleep(0.2)
                starts.append(round(time.perf_counter() - began, 1))
            finally:
                subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        result[target] = {
            "image": image,
            "size_gb": round(int(inspect.stdout) / 1e9, 2),
            "cold_start_s": starts,
        }
    return result


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--phases", default="knowledge,rss,docker")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--query-seed", type=int, default=7)
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / "cache")
    parser.add_argument("--configs", default="torch,default,torch-free")
    parser.add_argument("--rss-queries", type=int, default=100)
    parser.add_argument("--cold-starts", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "serving.json")
    args = parser.parse_args(argv)
    phases = set(args.phases.split(","))
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average_start": load_average(),
    }
    if "knowledge" in phases:
        print(f"== knowledge (load {load_average()})", flush=True)
        report["knowledge"] = knowledge_phase(args)
        print(json.dumps(report["knowledge"], indent=1), flush=True)
    if "rss" in phases:
        report["rss"] = {}
        for name in args.configs.split(","):
            print(f"== rss {name} (load {load_average()})", flush=True)
            measured = peak_rss(CONFIGS[name], args.rss_queries)
            report["rss"][name] = {**measured, "load": load_average()}
            print(json.dumps(report["rss"][name]), flush=True)
    if "docker" in phases:
        print(f"== docker (load {load_average()})", flush=True)
        report["docker"] = docker_phase(args.cold_starts)
        print(json.dumps(report["docker"]), flush=True)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    report["load_average_end"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
