"""What read-after-write costs a query: strong reads against the old 2-second interval.

Two processes share a LanceDB knowledge base in scale mode: the knowledge writer worker
commits, the event workers search. This benchmark plays both in one process with two
connections (the reader's is skyhigh.knowledge.search.KnowledgeBase, as a worker opens it) on
a copy of the demo knowledge base, and measures for each reader setting:

- `idle`: hybrid queries while nothing is written (the check finds the same version each
  time: the steady cost of strong reads);
- `after a write`: one new document committed by the writer connection before each query,
  which the reader then has to load (the cost when the check finds a new version), and how
  many of those queries found the document just written (an exact code, hybrid mode).

Usage (from the repository root):

    uv run python -m bench.consistency_bench                  # 300 queries per setting
    uv run python -m bench.consistency_bench --queries 50     # a quick look

Prints a Markdown table and the 1-minute load; writes nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb
import numpy as np

from skyhigh.knowledge.search import READ_AFTER_WRITE, KnowledgeBase

REPO = Path(__file__).resolve().parent.parent
TABLE = "knowledge"
SETTINGS: dict[str, timedelta | None] = {
    "interval 2 s (before)": timedelta(seconds=2),
    "strong reads (interval 0, now)": READ_AFTER_WRITE,
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def new_row(template: dict[str, Any], code: str) -> dict[str, Any]:
    row = dict(template)
    row.update(
        id=f"bench-{code}#0",
        document_id=f"bench-{code}",
        chunk=0,
        title="Gate code",
        text=f"The gate code is {code}.",
    )
    return row


def measure(uri: str, consistency: timedelta | None, queries: int) -> dict[str, Any]:
    reader = KnowledgeBase(uri, default_table=TABLE, consistency=consistency)
    writer = lancedb.connect(uri).open_table(TABLE)
    template = writer.head(1).to_pylist()[0]
    vector = np.asarray(template["vector"], dtype=np.float32)
    for _ in range(20):  # warm caches (index, manifests)
        reader.search(vector, text="checked bags", k=5, mode="hybrid")
    idle = []
    for _ in range(queries):
        started = time.perf_counter()
        reader.search(vector, text="checked bags", k=5, mode="hybrid")
        idle.append((time.perf_counter() - started) * 1000)
    after_write, found = [], 0
    for _ in range(queries // 3):
        code = f"ZQ{uuid.uuid4().hex[:8].upper()}"
        writer.add([new_row(template, code)])
        started = time.perf_counter()
        matches = reader.search(vector, text=code, k=3, mode="hybrid")
        after_write.append((time.perf_counter() - started) * 1000)
        found += bool(matches) and matches[0].id.startswith(f"bench-{code}")
    return {"idle": idle, "after_write": after_write, "found": found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()[0]:.2f}")
    rows = []
    for name, consistency in SETTINGS.items():
        with tempfile.TemporaryDirectory() as tmp:
            uri = str(Path(tmp) / "kb")
            shutil.copytree(REPO / "lancedb_data", uri)
            result = measure(uri, consistency, args.queries)
        idle, written = result["idle"], result["after_write"]
        rows.append(
            f"| {name} | {statistics.median(idle):.2f} | {percentile(idle, 0.95):.2f} | "
            f"{statistics.median(written):.2f} | {percentile(written, 0.95):.2f} | "
            f"{result['found']}/{len(written)} | {os.getloadavg()[0]:.2f} |"
        )
    print(
        "| reader | idle p50 ms | idle p95 ms | after a write p50 ms | after a write p95 ms "
        "| new document found | load |"
    )
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
