"""Build the demo knowledge base: `python -m skyhigh.cli.seed [--source data/knowledge.jsonl]`.

Writes to LANCEDB_URI: a local directory or an object store (`s3://bucket/prefix`, reached
with the AWS settings, see skyhigh.knowledge.storage). The bucket itself must exist.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from skyhigh.config import get_settings
from skyhigh.knowledge.embedder import load_embedder
from skyhigh.knowledge.seeding import (
    DEFAULT_SOURCE,
    build,
    entry_document,
    entry_rows,
    load_entries,
)
from skyhigh.knowledge.storage import open_knowledge_base, storage_options

# What other modules and tests import from here (the builder lives in skyhigh.knowledge).
__all__ = ["DEFAULT_SOURCE", "build", "entry_document", "entry_rows", "load_entries", "main"]


def main() -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--uri", default=settings.lancedb_uri)
    parser.add_argument("--table", default=settings.knowledge_table)
    parser.add_argument(
        "--if-empty",
        action="store_true",
        help="only build the table if it does not exist yet (never replace it)",
    )
    args = parser.parse_args()
    config = settings.knowledge.model_copy(update={"lancedb_uri": args.uri})
    options = storage_options(config)
    if args.if_empty and args.table in open_knowledge_base(config, table=args.table).table_names():
        print(f"{args.table!r} already exists in {args.uri}: left as it is", file=sys.stderr)
        return
    started = time.perf_counter()
    embedder = load_embedder(settings.knowledge, cache_dir=settings.model_cache_dir)
    count = build(args.source, args.uri, args.table, embedder, storage_options=options)
    elapsed = time.perf_counter() - started
    print(f"built {args.table!r} in {args.uri}: {count} entries in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
