"""Query latency of the knowledge base on object storage against local disk.

The same table (the demo corpus, data/knowledge.jsonl, repeated --copies times with fresh ids;
FTS index, and the vector index once it passes VECTOR_INDEX_MIN_ROWS) is written to a local
directory and to an S3 bucket on moto's S3 API server on loopback (a subprocess, as in the
tests). Then KnowledgeBase.search (k=10, the service's connection settings) runs --queries
queries per mode on each, after a warm-up; query vectors are embedded once beforehand, so
the figures are search time alone. Loopback has no network latency: a real store adds its
round trips (each a few ms within a region) to every read the figures below show.

Usage (repository root):

    uv run python -m bench.knowledge_storage_bench --queries 300 --copies 1
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa

from skyhigh.config import KnowledgeSettings, get_settings
from skyhigh.knowledge.embedder import load_embedder
from skyhigh.knowledge.search import KnowledgeBase, SearchMode
from skyhigh.knowledge.seeding import DEFAULT_SOURCE, entry_rows, load_entries
from skyhigh.knowledge.storage import open_knowledge_base, storage_options
from skyhigh.knowledge.tables import create_text_index, create_vector_index, documents_schema
from tests.support.services import S3Server

MODES: tuple[SearchMode, ...] = ("vector", "fulltext", "hybrid")
K = 10


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def table_rows(base: list[dict[str, Any]], copies: int) -> list[dict[str, Any]]:
    rows = []
    for copy in range(copies):
        for row in base:
            suffix = f"~{copy}" if copy else ""
            rows.append(
                {**row, "id": row["id"] + suffix, "document_id": row["document_id"] + suffix}
            )
    return rows


def write_table(config: KnowledgeSettings, rows: list[dict[str, Any]], dimension: int) -> float:
    """The table at config.lancedb_uri with the service's indexes; seconds it took."""
    started = time.perf_counter()
    db = lancedb.connect(config.lancedb_uri, storage_options=storage_options(config))
    data = pa.Table.from_pylist(rows, schema=documents_schema(dimension))
    table = db.create_table(config.knowledge_table, data=data, mode="overwrite")
    create_text_index(table)
    if len(rows) >= config.vector_index_min_rows:
        create_vector_index(table, config.vector_index_type)
    return time.perf_counter() - started


def measure(
    kb: KnowledgeBase, questions: list[str], vectors: np.ndarray, queries: int, warmup: int
) -> dict[str, Any]:
    first_started = time.perf_counter()
    kb.search(vectors[0], text=questions[0], k=K, mode="hybrid")
    result: dict[str, Any] = {
        "first_query_ms": round((time.perf_counter() - first_started) * 1e3, 2)
    }
    for mode in MODES:
        for i in range(warmup):
            kb.search(
                vectors[i % len(questions)], text=questions[i % len(questions)], k=K, mode=mode
            )
        times = []
        for i in range(queries):
            index = (i * 7) % len(questions)
            started = time.perf_counter()
            kb.search(vectors[index], text=questions[index], k=K, mode=mode)
            times.append((time.perf_counter() - started) * 1e3)
        result[mode] = {
            "p50_ms": round(float(np.percentile(times, 50)), 2),
            "p95_ms": round(float(np.percentile(times, 95)), 2),
            "load_1m": load_average(),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=300, help="per mode and backend")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--copies", type=int, default=1, help="demo corpus copies in the table")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    settings = get_settings()
    embedder = load_embedder(settings.knowledge, cache_dir=settings.model_cache_dir)
    entries = load_entries(DEFAULT_SOURCE)
    rows = table_rows(entry_rows(entries, embedder), args.copies)
    questions = [f"{entry['title']}?" for entry in entries]
    vectors = embedder.embed(questions)
    report: dict[str, Any] = {"rows": len(rows), "queries_per_mode": args.queries, "k": K}
    s3 = S3Server()
    s3.start()
    try:
        with tempfile.TemporaryDirectory(prefix="skyhigh-kb-bench-") as tmp:
            base = settings.knowledge.model_dump()
            backends = {  # validated: the AWS secret becomes a SecretStr
                "local": KnowledgeSettings.model_validate({**base, "lancedb_uri": f"{tmp}/kb"}),
                "s3 (moto, loopback)": KnowledgeSettings.model_validate(
                    {**base, "lancedb_uri": f"s3://{s3.create_bucket()}/kb", **s3.settings()}
                ),
            }
            for name, config in backends.items():
                print(f"== {name}: writing {len(rows)} rows (load {load_average()})", flush=True)
                write_s = write_table(config, rows, embedder.dimension)
                kb = open_knowledge_base(config)
                report[name] = {
                    "write_s": round(write_s, 2),
                    **measure(kb, questions, vectors, args.queries, args.warmup),
                }
                print(json.dumps(report[name]), flush=True)
    finally:
        s3.stop()
    print_table(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return 0


def print_table(report: dict[str, Any]) -> None:
    print(f"\n{report['rows']} rows, k={report['k']}, {report['queries_per_mode']} queries/mode")
    print("| storage | mode | p50 ms | p95 ms | load (1 min) |")
    print("|---|---|---:|---:|---:|")
    for name in ("local", "s3 (moto, loopback)"):
        for mode in MODES:
            figures = report[name][mode]
            print(
                f"| {name} | {mode} | {figures['p50_ms']} | {figures['p95_ms']} | "
                f"{figures['load_1m']} |"
            )
    for name in ("local", "s3 (moto, loopback)"):
        print(
            f"{name}: table written in {report[name]['write_s']} s, first query "
            f"{report[name]['first_query_ms']} ms"
        )


if __name__ == "__main__":
    raise SystemExit(main())
