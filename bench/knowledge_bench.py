"""Knowledge-base benchmark: ingestion, index build, query latency and recall@10.

On --rows (100k) distinct airline-support sentences (bench/knowledge_corpus.py, seeded):

1. Embedding: all rows once with the service's Embedder (all-MiniLM-L6-v2, batches of 256),
   cached as float32 .npy + texts under --cache and reused on later runs. The throughput of a
   fresh sample is measured on every run, in bulk batches and in ingest.py's per-document calls.
2. Write path: the real KnowledgeWriter (its thread, WriterConfig from the service's default
   settings) into a fresh LanceDB directory under --cache, documents of --doc-chunks rows each,
   --batch documents submitted together and waited for, exactly like skyhigh/cli/ingest.py. The
   writer's own upkeep (FTS index from the first commit, the vector index once the table
   passes VECTOR_INDEX_MIN_ROWS, optimize every OPTIMIZE_AFTER_ROWS) runs inside, as it does in
   the service; its time is reported separately. Then `upkeep_now()` as ingest does.
3. Query latency through KnowledgeBase.search (k=10) plus Embedder.embed of the query, per mode,
   after a warm-up: on the index as ingestion leaves it (trained when the table crossed
   VECTOR_INDEX_MIN_ROWS) and on one rebuilt by `maintain_table` over all rows.
4. Recall@10 against exact search (numpy dot products over the normalised vectors; checked
   against LanceDB's `bypass_vector_index()`), and a sweep over index types and query knobs
   (nprobes, ef, refine_factor, num_partitions), search-only latency.

Usage (repository root):

    uv run python -m bench.knowledge_bench --rows 100000 --queries 200 \
        --cache bench/cache/ --out bench/out/knowledge.json

Writes JSON to --out and the markdown tables next to it (.md). Before the timed query runs it
waits (polling every 30 s, up to --max-wait-s) until no speech benchmark, docker build or
pytest is running on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.knowledge_corpus import QUESTION_TEMPLATES, STATEMENT_TEMPLATES, corpus, queries
from skyhigh.config import Settings
from skyhigh.knowledge.embedder import Embedder
from skyhigh.knowledge.search import KnowledgeBase
from skyhigh.knowledge.tables import VECTOR_INDEX_CONFIGS, create_vector_index
from skyhigh.knowledge.torch_embedder import TorchEmbedder
from skyhigh.knowledge.writer import KnowledgeWriter, WriteOp, WriterConfig

ROOT = Path(__file__).resolve().parent.parent

Vectors = npt.NDArray[np.float32]
BUSY_PATTERN = "speech_bench|docker build|pytest"
TABLE = "knowledge"
CORPUS_VERSION = "v1"
K = 10
P50_TARGET_MS = 15.0
RECALL_TARGET = 0.95

# --------------------------------------------------------------------------- machine state


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def busy_processes() -> list[str]:
    found = subprocess.run(["pgrep", "-af", BUSY_PATTERN], capture_output=True, text=True)
    own = {os.getpid(), os.getppid()}
    return [
        line
        for line in found.stdout.splitlines()
        if line.strip() and int(line.split(maxsplit=1)[0]) not in own
    ]


def wait_until_quiet(max_wait_s: float, poll_s: float = 30.0) -> dict[str, Any]:
    started = time.monotonic()
    seen: list[str] = []
    while True:
        busy = busy_processes()
        if not busy:
            break
        seen = busy
        if time.monotonic() - started > max_wait_s:
            print(f"still busy after {max_wait_s:.0f} s, measuring anyway: {busy}", flush=True)
            break
        print(f"waiting for quiet: {busy}", flush=True)
        time.sleep(poll_s)
    return {
        "waited_s": round(time.monotonic() - started, 1),
        "quiet": not busy_processes(),
        "last_busy": seen[:5],
        "load_average": load_average(),
    }


@contextmanager
def phase(name: str, record: dict[str, Any]) -> Iterator[None]:
    print(f"== {name} (load {load_average()})", flush=True)
    record.setdefault("load_average", {})[name] = load_average()
    started = time.perf_counter()
    yield
    print(f"   {name}: {time.perf_counter() - started:.1f} s", flush=True)


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)), 3)


def summary_ms(values: list[float]) -> dict[str, float]:
    return {"p50": pct(values, 50), "p95": pct(values, 95), "p99": pct(values, 99)}


# --------------------------------------------------------------------------- embeddings


def cached_corpus(
    cache: Path, rows: int, seed: int, embedder: Embedder, batch: int
) -> tuple[list[str], Vectors, dict[str, Any]]:
    """Texts and their vectors, embedded once (in resumable parts) and then read from disk."""
    folder = cache / f"knowledge_corpus_{CORPUS_VERSION}_{rows}_s{seed}"
    texts_file, vectors_file, meta_file = (
        folder / "texts.json",
        folder / "vectors.npy",
        folder / "meta.json",
    )
    if vectors_file.exists() and texts_file.exists() and meta_file.exists():
        texts = json.loads(texts_file.read_text())
        vectors = np.load(vectors_file)
        meta = json.loads(meta_file.read_text())
        print(f"corpus from cache: {folder} ({len(texts)} rows)", flush=True)
        return texts, vectors, {**meta, "from_cache": True}
    folder.mkdir(parents=True, exist_ok=True)
    texts = corpus(rows, seed)
    texts_file.write_text(json.dumps(texts))
    parts = folder / "parts"
    parts.mkdir(exist_ok=True)
    part_rows = 8192
    embedded_s = 0.0
    embedded_rows = 0
    pieces = []
    for start in range(0, rows, part_rows):
        part = parts / f"{start:07d}.npy"
        if part.exists():
            pieces.append(np.load(part))
            continue
        began = time.perf_counter()
        chunk = embedder.embed(texts[start : start + part_rows], batch_size=batch)
        embedded_s += time.perf_counter() - began
        embedded_rows += len(chunk)
        np.save(part, chunk)
        pieces.append(chunk)
        rate = embedded_rows / embedded_s
        print(f"   embedded {start + len(chunk)}/{rows} ({rate:.0f} sentences/s)", flush=True)
    vectors = np.concatenate(pieces).astype(np.float32)
    meta = {
        "rows": rows,
        "seed": seed,
        "model": embedder.name,
        "dimension": int(vectors.shape[1]),
        "batch_size": batch,
        "embed_s": round(embedded_s, 1),
        "embedded_rows": embedded_rows,
        "sentences_per_s": round(embedded_rows / embedded_s, 1) if embedded_s else None,
        "load_average_after": load_average(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    np.save(vectors_file, vectors)
    meta_file.write_text(json.dumps(meta, indent=2))
    shutil.rmtree(parts)
    return texts, vectors, {**meta, "from_cache": False}


def embedding_throughput(embedder: Embedder, texts: list[str], doc_chunks: int) -> dict[str, Any]:
    """Sentences/s now, in bulk batches of 256 and in ingest.py's one call per document."""
    embedder.embed(texts[:64])
    began = time.perf_counter()
    embedder.embed(texts, batch_size=256)
    bulk = len(texts) / (time.perf_counter() - began)
    sample = texts[: max(doc_chunks, len(texts) // 4)]
    began = time.perf_counter()
    for start in range(0, len(sample), doc_chunks):
        embedder.embed(sample[start : start + doc_chunks])
    per_doc = len(sample) / (time.perf_counter() - began)
    return {
        "sample": len(texts),
        "bulk_batch256_per_s": round(bulk, 1),
        f"per_document_{doc_chunks}_per_s": round(per_doc, 1),
        "per_document_per_s": round(per_doc, 1),
    }


# --------------------------------------------------------------------------- write path


class TimedWriter(KnowledgeWriter):
    """The service's writer, with the time of each `maintain_table` call recorded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.upkeep_log: list[dict[str, Any]] = []

    def maintain_table(self, table: Any) -> None:
        had_vector = _has_vector_index(table)
        rows = table.count_rows()
        began = time.perf_counter()
        super().maintain_table(table)
        self.upkeep_log.append(
            {
                "rows": rows,
                "s": round(time.perf_counter() - began, 3),
                "built_vector_index": not had_vector and _has_vector_index(table),
            }
        )


def _has_vector_index(table: Any) -> bool:
    return any(tuple(index.columns) == ("vector",) for index in table.list_indices())


def _vector_index_name(table: Any) -> str | None:
    for index in table.list_indices():
        if tuple(index.columns) == ("vector",):
            return str(index.name)
    return None


def row_id(row: int, doc_chunks: int) -> str:
    return f"d{row // doc_chunks:06d}#{row % doc_chunks}"


def row_of(identifier: str, doc_chunks: int) -> int:
    document, chunk = identifier[1:].split("#")
    return int(document) * doc_chunks + int(chunk)


def documents(
    texts: list[str], vectors: Vectors, doc_chunks: int
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    for start in range(0, len(texts), doc_chunks):
        document_id = f"d{start // doc_chunks:06d}"
        rows = [
            {
                "id": row_id(i, doc_chunks),
                "document_id": document_id,
                "chunk": i - start,
                "title": f"Support notes {document_id}",
                "text": texts[i],
                "content_sha256": f"{start:064x}",
                "vector": vectors[i].tolist(),
            }
            for i in range(start, min(start + doc_chunks, len(texts)))
        ]
        yield document_id, rows


def ingest_write_path(
    uri: Path, texts: list[str], vectors: Vectors, settings: Settings, args: argparse.Namespace
) -> tuple[KnowledgeBase, TimedWriter, dict[str, Any]]:
    if uri.exists():
        shutil.rmtree(uri)
    kb = KnowledgeBase(str(uri), default_table=TABLE, nprobes=settings.vector_nprobes)
    config = WriterConfig.from_settings(settings.knowledge, dimension=int(vectors.shape[1]))
    writer = TimedWriter(kb, config)
    writer.start()
    pending: list[WriteOp] = []
    commits = 0
    began = time.perf_counter()
    progress_at = began
    try:
        for document_id, rows in documents(texts, vectors, args.doc_chunks):
            pending.append(WriteOp(TABLE, "documents", rows, [document_id]))
            if len(pending) >= args.batch:
                for future in [writer.submit(op) for op in pending]:
                    future.result()
                pending.clear()
                commits += 1
                if time.perf_counter() - progress_at > 30:
                    progress_at = time.perf_counter()
                    done = commits * args.batch * args.doc_chunks
                    rate = done / (progress_at - began)
                    print(f"   wrote {done} chunks ({rate:.0f}/s)", flush=True)
        for future in [writer.submit(op) for op in pending]:
            future.result()
        writes_done = time.perf_counter()
        writer.upkeep_now().result()
        finished = time.perf_counter()
    finally:
        writer.stop()
    table = kb.table(TABLE)
    in_loop_upkeep = writer.upkeep_log[:-1]
    upkeep_s = sum(entry["s"] for entry in in_loop_upkeep)
    loop_s = writes_done - began
    built = [entry for entry in writer.upkeep_log if entry["built_vector_index"]]
    chunks = table.count_rows()
    result = {
        "chunks": chunks,
        "documents": (len(texts) + args.doc_chunks - 1) // args.doc_chunks,
        "doc_chunks": args.doc_chunks,
        "documents_per_commit": args.batch,
        "writer_config": {
            "vector_index_min_rows": config.vector_index_min_rows,
            "vector_index_type": config.vector_index_type,
            "optimize_after_rows": config.optimize_after_rows,
            "batch_window_s": config.batch_window_s,
        },
        "loop_s": round(loop_s, 2),
        "upkeep_in_loop_s": round(upkeep_s, 2),
        "upkeep_calls_in_loop": len(in_loop_upkeep),
        "final_upkeep_s": round(finished - writes_done, 2),
        "commit_only_chunks_per_s": round(chunks / (loop_s - upkeep_s), 1),
        "with_upkeep_chunks_per_s": round(chunks / loop_s, 1),
        "including_final_upkeep_chunks_per_s": round(chunks / (finished - began), 1),
        "vector_index_built_at_rows": built[0]["rows"] if built else None,
        "vector_index_build_upkeep_s": built[0]["s"] if built else None,
        "upkeep_log": writer.upkeep_log,
    }
    return kb, writer, result


# --------------------------------------------------------------------------- queries


def exact_top_k(corpus_vectors: Vectors, query_vectors: Vectors, k: int) -> list[set[int]]:
    scores = query_vectors @ corpus_vectors.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    return [set(map(int, row)) for row in top]


def recall(found: list[list[str]], truth: list[set[int]], doc_chunks: int) -> float:
    hits = [
        len({row_of(i, doc_chunks) for i in ids} & expected) / len(expected)
        for ids, expected in zip(found, truth, strict=True)
    ]
    return round(float(np.mean(hits)), 4)


def service_latency(
    kb: KnowledgeBase,
    embedder: Embedder,
    questions: list[str],
    mode: str,
    warmup: int,
) -> tuple[dict[str, Any], list[list[str]]]:
    """Embed the question + KnowledgeBase.search, each timed, per question."""

    def one(question: str) -> tuple[float, float, list[str]]:
        began = time.perf_counter()
        vector = embedder.embed([question])[0]
        embedded = time.perf_counter()
        matches = kb.search(vector, text=question, k=K, mode=mode)  # type: ignore[arg-type]
        searched = time.perf_counter()
        return (embedded - began) * 1000, (searched - embedded) * 1000, [m.id for m in matches]

    for question in questions[:warmup]:
        one(question)
    embed_ms, search_ms, total_ms, found = [], [], [], []
    for question in questions:
        e, s, ids = one(question)
        embed_ms.append(e)
        search_ms.append(s)
        total_ms.append(e + s)
        found.append(ids)
    return {
        "mode": mode,
        "queries": len(questions),
        "total_ms": summary_ms(total_ms),
        "embed_ms": summary_ms(embed_ms),
        "search_ms": summary_ms(search_ms),
        "load_average": load_average(),
    }, found


def raw_search(
    table: Any,
    query_vectors: Vectors,
    *,
    nprobes: int | None,
    ef: int | None,
    refine: int | None,
    exact: bool = False,
    warmup: int = 20,
) -> tuple[list[float], list[list[str]]]:
    """The query KnowledgeBase builds for mode=vector, with the knobs set; search only."""

    def build(vector: Vectors) -> Any:
        query = table.search(vector).distance_type("cosine")
        if exact:
            return query.bypass_vector_index()
        if nprobes is not None:
            query = query.nprobes(nprobes)
        if ef is not None:
            query = query.ef(ef)
        if refine is not None:
            query = query.refine_factor(refine)
        return query

    for vector in query_vectors[:warmup]:
        build(vector).limit(K).to_list()
    times, found = [], []
    for vector in query_vectors:
        began = time.perf_counter()
        rows = build(vector).limit(K).to_list()
        times.append((time.perf_counter() - began) * 1000)
        found.append([row["id"] for row in rows])
    return times, found


def index_stats(table: Any) -> dict[str, Any]:
    name = _vector_index_name(table)
    if name is None:
        return {}
    stats = table.index_stats(name)
    return {
        "name": name,
        "index_type": str(getattr(stats, "index_type", "")),
        "num_indexed_rows": getattr(stats, "num_indexed_rows", None),
        "num_unindexed_rows": getattr(stats, "num_unindexed_rows", None),
        "num_indices": getattr(stats, "num_indices", None),
    }


class TunedKnowledgeBase(KnowledgeBase):
    """KnowledgeBase with ef / refine_factor set on vector and hybrid queries (a proposal)."""

    def __init__(self, *args: Any, ef: int = 0, refine_factor: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, refine_factor=max(refine_factor, 1), **kwargs)
        self.ef = ef

    def _vector_query(self, handle: Any, vector: Vectors) -> Any:
        query = super()._vector_query(handle, vector)
        return query.ef(self.ef) if self.ef else query


def neighbour_gaps(corpus_vectors: Vectors, query_vectors: Vectors, k: int) -> dict[str, float]:
    """How close the k-th and (k+1)-th exact neighbours are: small gaps make recall hard."""
    scores = np.sort(query_vectors @ corpus_vectors.T, axis=1)[:, ::-1]
    gaps = scores[:, k - 1] - scores[:, k]
    return {
        "top1_similarity_median": round(float(np.median(scores[:, 0])), 4),
        "kth_similarity_median": round(float(np.median(scores[:, k - 1])), 4),
        "gap_k_k1_median": round(float(np.median(gaps)), 5),
        "gap_k_k1_p10": round(float(np.percentile(gaps, 10)), 5),
    }


def embed_threads(embedder: Embedder, questions: list[str], warmup: int) -> list[dict[str, Any]]:
    """Single-question embedding latency with torch on 1 and on 2 intra-op threads."""
    import torch

    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for question in questions[:warmup]:
                embedder.embed([question])
            times = []
            for question in questions:
                began = time.perf_counter()
                embedder.embed([question])
                times.append((time.perf_counter() - began) * 1000)
            results.append({"torch_threads": threads, "embed_ms": summary_ms(times)})
    finally:
        torch.set_num_threads(before)
    return results


def build_index(table: Any, index_type: str, partitions: int | None) -> float:
    name = _vector_index_name(table)
    if name is not None:
        table.drop_index(name)
    began = time.perf_counter()
    if partitions is None:
        create_vector_index(table, index_type)  # exactly what the service builds
    else:
        config = VECTOR_INDEX_CONFIGS[index_type](distance_type="cosine", num_partitions=partitions)
        table.create_index("vector", config=config, replace=True)
    return time.perf_counter() - began


SweepPoint = tuple[int | None, int | None, int | None]  # nprobes, ef, refine_factor


def sweep_points(index_type: str) -> list[SweepPoint]:
    points: list[SweepPoint] = [(n, None, None) for n in (1, 2, 5, 10, 20, 40)]
    if "HNSW" in index_type:
        # ef defaults to 1.5 * k (15 for k=10).
        points += [(20, ef, None) for ef in (20, 30, 50, 100, 200)]
    if index_type in ("IVF_PQ", "IVF_HNSW_SQ", "IVF_SQ"):
        points += [(20, None, r) for r in (2, 5, 10, 20)]
    if index_type == "IVF_HNSW_SQ":
        points += [(20, 50, 2), (20, 50, 5)]
    return points


def run_sweep(
    table: Any,
    query_vectors: Vectors,
    truth: list[set[int]],
    configs: list[tuple[str, int | None]],
    doc_chunks: int,
) -> list[dict[str, Any]]:
    results = []
    for index_type, partitions in configs:
        build_s = build_index(table, index_type, partitions)
        print(
            f"   {index_type} partitions={partitions or 'default'}: built in {build_s:.1f} s",
            flush=True,
        )
        for nprobes, ef, refine in sweep_points(index_type):
            times, found = raw_search(table, query_vectors, nprobes=nprobes, ef=ef, refine=refine)
            row = {
                "index_type": index_type,
                "num_partitions": partitions,
                "build_s": round(build_s, 1),
                "nprobes": nprobes,
                "ef": ef,
                "refine_factor": refine,
                "search_ms": summary_ms(times),
                "recall_at_10": recall(found, truth, doc_chunks),
            }
            results.append(row)
            print(
                f"      nprobes={nprobes} ef={ef} refine={refine}: "
                f"p50 {row['search_ms']['p50']:.2f} ms, recall {row['recall_at_10']:.3f}",
                flush=True,
            )
    return results


# --------------------------------------------------------------------------- report


def _fmt(value: Any) -> str:
    return "–" if value is None else str(value)


def markdown(report: dict[str, Any]) -> str:
    lines = []
    emb = report["embedding"]
    write = report["write_path"]
    lines += [
        f"Embedding ({report['config']['model']}): {emb['bulk_batch256_per_s']} sentences/s in "
        f"batches of 256, {emb['per_document_per_s']} sentences/s in ingest.py's per-document "
        f"calls ({report['config']['doc_chunks']} chunks).",
        "",
        "| write path | chunks/s |",
        "|---|---|",
        f"| commits only (merge_insert, {write['documents_per_commit']} documents × "
        f"{write['doc_chunks']} chunks per commit) | {write['commit_only_chunks_per_s']} |",
        f"| with the writer's in-loop upkeep ({write['upkeep_calls_in_loop']} calls, "
        f"{write['upkeep_in_loop_s']} s) | {write['with_upkeep_chunks_per_s']} |",
        f"| plus the final upkeep_now ({write['final_upkeep_s']} s) | "
        f"{write['including_final_upkeep_chunks_per_s']} |",
        f"| end to end with bulk embedding (combined) | {report['end_to_end']['bulk_per_s']} |",
        f"| end to end with per-document embedding (as ingest.py) | "
        f"{report['end_to_end']['per_document_per_s']} |",
        "",
    ]
    lines += [
        "| index | build s | index segments | vector recall@10 |",
        "|---|---|---|---|",
    ]
    for name, state in report["index_states"].items():
        segments = state.get("index", {}).get("num_indices")
        lines.append(
            f"| {name} | {_fmt(state.get('build_s'))} | {_fmt(segments)} | "
            f"{state['recall_at_10']} |"
        )
    lines += [
        "",
        "| index | mode | total p50 | total p95 | total p99 | embed p50 | embed p95 | "
        "search p50 | search p95 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, state in report["index_states"].items():
        for mode in state["latency"]:
            t, e, s = mode["total_ms"], mode["embed_ms"], mode["search_ms"]
            lines.append(
                f"| {name} | {mode['mode']} | {t['p50']:.1f} | {t['p95']:.1f} | {t['p99']:.1f} | "
                f"{e['p50']:.1f} | {e['p95']:.1f} | {s['p50']:.1f} | {s['p95']:.1f} |"
            )
    gaps = report["neighbour_gaps"]
    lines += [
        "",
        f"Exact neighbours: median top-1 similarity {gaps['top1_similarity_median']}, "
        f"10th {gaps['kth_similarity_median']}; gap between the 10th and 11th: median "
        f"{gaps['gap_k_k1_median']}, p10 {gaps['gap_k_k1_p10']}.",
        "",
        f"| index state (vector mode) | total p50 ms ≤ {P50_TARGET_MS} | "
        f"recall@10 ≥ {RECALL_TARGET} |",
        "|---|---|---|",
    ]
    for name, target in report["targets"]["per_index_state"].items():
        lines.append(
            f"| {name} | {target['vector_total_p50_ms']:.1f}: "
            f"{'met' if target['p50_met'] else 'NOT met'} | {target['recall_at_10']}: "
            f"{'met' if target['recall_met'] else 'NOT met'} |"
        )
    lines += ["", "| torch threads | embed p50 ms | embed p95 ms |", "|---|---|---|"]
    for row in report.get("embed_threads", []):
        lines.append(
            f"| {row['torch_threads']} | {row['embed_ms']['p50']:.1f} | "
            f"{row['embed_ms']['p95']:.1f} |"
        )
    lines += [
        "",
        "Sweep (search only, query vectors pre-embedded; add the embed p50 for the total):",
        "",
        "| index | partitions | build s | nprobes | ef | refine | search p50 ms | search p95 ms "
        "| recall@10 | both targets |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    embed_p50 = report["embed_p50_ms"]
    for row in report["sweep"]:
        meets = (
            row["recall_at_10"] >= RECALL_TARGET
            and row["search_ms"]["p50"] + embed_p50 <= P50_TARGET_MS
        )
        lines.append(
            f"| {row['index_type']} | {_fmt(row['num_partitions'])} | {row['build_s']} | "
            f"{_fmt(row['nprobes'])} | {_fmt(row['ef'])} | {_fmt(row['refine_factor'])} | "
            f"{row['search_ms']['p50']:.2f} | {row['search_ms']['p95']:.2f} | "
            f"{row['recall_at_10']:.3f} | {'yes' if meets else 'no'} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / "cache")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "knowledge.json")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--query-seed", type=int, default=7)
    parser.add_argument("--doc-chunks", type=int, default=5, help="chunks per document")
    parser.add_argument("--batch", type=int, default=32, help="documents per commit (ingest.py)")
    parser.add_argument("--embed-batch", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--max-wait-s", type=float, default=900.0)
    parser.add_argument(
        "--proposed-refine",
        type=int,
        default=10,
        help="refine_factor for the 'proposed' KnowledgeBase variant (0: none)",
    )
    parser.add_argument(
        "--proposed-ef", type=int, default=0, help="ef for the proposed variant (0: none)"
    )
    parser.add_argument(
        "--prepare-only", action="store_true", help="embed and cache the corpus, then stop"
    )
    parser.add_argument(
        "--torch-threads", type=int, help="torch intra-op threads (default: torch's own)"
    )
    parser.add_argument(
        "--index-min-rows", type=int, help="VECTOR_INDEX_MIN_ROWS (default: the service's)"
    )
    parser.add_argument(
        "--sweep",
        default="IVF_HNSW_SQ:default,IVF_HNSW_SQ:8,IVF_PQ:default,IVF_FLAT:default",
        help="index configs to sweep, TYPE:PARTITIONS comma-separated ('' to skip)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(_env_file=None)  # the service's defaults, not this machine's .env
    if args.index_min_rows is not None:
        settings = settings.model_copy(update={"vector_index_min_rows": args.index_min_rows})
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "config": {
            "rows": args.rows,
            "queries": args.queries,
            "seed": args.seed,
            "query_seed": args.query_seed,
            "doc_chunks": args.doc_chunks,
            "batch": args.batch,
            "model": settings.embedding_model,
            "vector_nprobes": settings.vector_nprobes,
            "torch_threads": args.torch_threads,
            "statement_templates": STATEMENT_TEMPLATES,
            "question_templates": QUESTION_TEMPLATES,
        },
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(f"load average at start: {load_average()}", flush=True)
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    # torch, the reference: the cached corpus vectors and the first knowledge figures are torch's
    # (bench/serving_bench.py compares the backends on this corpus).
    embedder = TorchEmbedder(settings.embedding_model)

    with phase("corpus", report):
        texts, vectors, meta = cached_corpus(
            args.cache, args.rows, args.seed, embedder, args.embed_batch
        )
        report["corpus_cache"] = meta
    if args.prepare_only:
        print(f"corpus cached: {meta}")
        return 0
    questions = queries(args.queries, args.query_seed)
    # Timed phases from here on: let other helpers' benchmarks, builds and tests finish first.
    report["quiet_wait_before_ingest"] = wait_until_quiet(args.max_wait_s)
    with phase("embedding throughput", report):
        report["embedding"] = embedding_throughput(embedder, texts[:2048], args.doc_chunks)

    uri = args.cache / f"knowledge_lancedb_{args.rows}"
    with phase("write path", report):
        kb, writer, report["write_path"] = ingest_write_path(uri, texts, vectors, settings, args)
    write = report["write_path"]
    emb = report["embedding"]
    # ingest.py embeds a document, then waits for its batch's commit: the costs add up.
    writes = write["with_upkeep_chunks_per_s"]
    report["end_to_end"] = {
        "bulk_per_s": round(1 / (1 / emb["bulk_batch256_per_s"] + 1 / writes), 1),
        "per_document_per_s": round(1 / (1 / emb["per_document_per_s"] + 1 / writes), 1),
    }

    query_vectors = embedder.embed(questions, batch_size=64)
    truth = exact_top_k(vectors, query_vectors, K)
    report["neighbour_gaps"] = neighbour_gaps(vectors, query_vectors, K)
    table = kb.table(TABLE)
    _, exact_found = raw_search(
        table, query_vectors[:20], nprobes=None, ef=None, refine=None, exact=True, warmup=0
    )
    report["exact_check_recall"] = recall(exact_found, truth[:20], args.doc_chunks)

    report["quiet_wait"] = wait_until_quiet(args.max_wait_s)
    states: dict[str, Any] = {}

    tuned = TunedKnowledgeBase(
        str(uri),
        default_table=TABLE,
        nprobes=settings.vector_nprobes,
        ef=args.proposed_ef,
        refine_factor=args.proposed_refine,
    )
    tuned_label = ", ".join(
        f"{knob} {value}"
        for knob, value in (("ef", args.proposed_ef), ("refine_factor", args.proposed_refine))
        if value
    )

    def measure(
        name: str,
        build_s: float | None,
        base: KnowledgeBase = kb,
        modes: tuple[str, ...] = ("vector", "fulltext", "hybrid"),
    ) -> None:
        with phase(f"queries: {name}", report):
            latency = []
            found_vector: list[list[str]] = []
            for mode in modes:
                stats, found = service_latency(base, embedder, questions, mode, args.warmup)
                latency.append(stats)
                if mode == "vector":
                    found_vector = found
            states[name] = {
                "build_s": None if build_s is None else round(build_s, 1),
                "index": index_stats(table),
                "recall_at_10": recall(found_vector, truth, args.doc_chunks),
                "latency": latency,
            }
            print(f"   {json.dumps(states[name])}", flush=True)

    as_ingested = (
        f"{settings.vector_index_type} as ingested (trained at "
        f"{write['vector_index_built_at_rows']} rows, then optimize)"
    )
    measure(as_ingested, None)
    if tuned_label:
        measure(f"{as_ingested} + {tuned_label}", None, tuned, ("vector", "hybrid"))
    with phase("rebuild over all rows", report):
        table.drop_index(_vector_index_name(table))
        began = time.perf_counter()
        writer.maintain_table(table)  # builds it with the service's parameters, then optimizes
        rebuild_s = time.perf_counter() - began
    rebuilt = f"{settings.vector_index_type} rebuilt over {args.rows} rows"
    measure(rebuilt, rebuild_s)
    if tuned_label:
        measure(f"{rebuilt} + {tuned_label}", rebuild_s, tuned, ("vector", "hybrid"))
    report["index_states"] = states
    with phase("embedding threads", report):
        report["embed_threads"] = embed_threads(embedder, questions, args.warmup)
    report["embed_p50_ms"] = next(iter(states.values()))["latency"][0]["embed_ms"]["p50"]

    configs: list[tuple[str, int | None]] = []
    for item in filter(None, args.sweep.split(",")):
        kind, _, partitions = item.partition(":")
        configs.append((kind, None if partitions in ("", "default") else int(partitions)))
    with phase("sweep", report):
        report["sweep"] = run_sweep(table, query_vectors, truth, configs, args.doc_chunks)

    report["targets"] = {
        "p50_ms_target": P50_TARGET_MS,
        "recall_target": RECALL_TARGET,
        "per_index_state": {
            name: {
                "vector_total_p50_ms": state["latency"][0]["total_ms"]["p50"],
                "recall_at_10": state["recall_at_10"],
                "p50_met": state["latency"][0]["total_ms"]["p50"] <= P50_TARGET_MS,
                "recall_met": state["recall_at_10"] >= RECALL_TARGET,
            }
            for name, state in states.items()
        },
    }
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    report["load_average_end"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    table_md = markdown(report)
    args.out.with_suffix(".md").write_text(table_md)
    print(table_md)
    print(json.dumps(report["targets"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
