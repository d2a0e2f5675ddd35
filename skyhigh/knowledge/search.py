"""Searching the knowledge base in LanceDB: one connection per process, tables cached.

Reads (searches) run on any worker thread. Writes go through `KnowledgeWriter`
(skyhigh.knowledge.writer), the one thread that commits to the tables. What the tables hold
is skyhigh.knowledge.tables; how client values become SQL is skyhigh.knowledge.sql.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal

import lancedb
import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from skyhigh.domain.events import ErrorCode, Match, StepFailed
from skyhigh.domain.payloads import FilterValue
from skyhigh.knowledge.fusion import Candidate, fuse, is_exact, tokens
from skyhigh.knowledge.sql import Reader, quote_list, where_clause
from skyhigh.knowledge.tables import (
    HIDDEN_COLUMNS,
    describe_table,
    has_positions,
    public_id_column,
    text_index,
)

SearchMode = Literal["vector", "fulltext", "hybrid"]

# Strong reads: every read first checks the table's latest version (one small manifest
# lookup) and loads it when another process (the writer worker, ingest) committed since. So a
# write that reported completed is seen by the next query on any worker; it costs well under
# a millisecond per query on local disk (bench/consistency_bench.py, BENCHMARKS.md
# "Scale-out"). An interval instead (the old 2 s) let a worker miss a document completed just
# before, and a reader pinned on an old version could lose its files to compaction's cleanup.
READ_AFTER_WRITE = timedelta(0)


class KnowledgeBase:
    """Search LanceDB tables of passages.

    Usage::

        kb = KnowledgeBase("./lancedb_data", default_table="knowledge")
        matches = kb.search(vector, text="checked bags", k=5, mode="hybrid")
    """

    def __init__(
        self,
        uri: str,
        *,
        default_table: str,
        nprobes: int = 20,
        refine_factor: int = 10,
        consistency: timedelta | None = READ_AFTER_WRITE,
        storage_options: Mapping[str, str] | None = None,
    ) -> None:
        self.uri = uri
        self.default_table = default_table
        self.nprobes = nprobes
        # The index's quantized distances rank the top 10 loosely; re-scoring refine_factor × k
        # candidates with full vectors lifts recall@10 from 0.86 to 0.97 (BENCHMARKS.md).
        self.refine_factor = refine_factor
        # storage_options: where an object store is and how to reach it
        # (skyhigh.knowledge.storage); never kept on self, since it may hold keys.
        self._db = lancedb.connect(
            uri,
            read_consistency_interval=consistency,
            storage_options=dict(storage_options or {}),
        )
        self._tables: dict[str, Any] = {}
        self._lock = threading.Lock()

    def table(self, name: str | None = None) -> Any:
        name = name or self.default_table
        with self._lock:
            cached = self._tables.get(name)
            if cached is not None:
                return cached
            try:
                table = self._db.open_table(name)
            except (ValueError, FileNotFoundError) as exc:
                # Neither the other tables nor the storage path: tenants share this base, and
                # GET /knowledge/tables is where a caller may look tables up.
                raise StepFailed(
                    ErrorCode.TABLE_NOT_FOUND,
                    f"no knowledge table {name!r}; GET /knowledge/tables lists the tables",
                ) from exc
            self._tables[name] = table
            return table

    def create_table(self, name: str, schema: pa.Schema) -> Any:
        """Open `name`, creating it empty with `schema` if needed (writer thread only)."""
        with self._lock:
            if name in self._tables:
                return self._tables[name]
            table = self._db.create_table(name, schema=schema, exist_ok=True)
            self._tables[name] = table
            return table

    def table_names(self) -> list[str]:
        return sorted(self._db.list_tables().tables)

    def search(
        self,
        vector: NDArray[np.float32] | Sequence[float],
        *,
        text: str = "",
        table: str | None = None,
        k: int = 5,
        filter: dict[str, FilterValue] | None = None,
        mode: SearchMode = "vector",
        min_score: float | None = None,
        reader: Reader | None = None,
    ) -> list[Match]:
        """Top-k matches. Scores: cosine similarity (vector), BM25 (fulltext), fused rank
        score (hybrid; see skyhigh.knowledge.fusion).

        `min_score` drops matches below it: the score itself in vector and fulltext mode; in
        hybrid mode the cosine similarity (the vector mode scale, since a rank score says
        nothing about relevance), except for matches holding every query token. In a
        per-owner table (transcripts) only `reader`'s rows are searched.
        """
        name = table or self.default_table
        handle = self.table(name)
        query_vector = np.asarray(vector, dtype=np.float32)
        # Checked before LanceDB sees anything: a bad filter is the client's invalid_filter.
        schema = handle.schema  # read once: each read asks LanceDB for the current version
        where = where_clause(filter, schema, reader)
        id_column = public_id_column(schema)
        try:
            if mode == "hybrid":
                return self._hybrid(
                    handle, name, query_vector, text, where, k, min_score, id_column=id_column
                )
            query = (
                handle.search(text, query_type="fts")
                if mode == "fulltext"
                else self._vector_query(handle, query_vector)
            )
            if where:
                query = query.where(where, prefilter=True)
            rows = query.limit(k).to_list()
        except (ValueError, RuntimeError) as exc:
            if mode != "vector":
                self._explain_text_failure(handle, name, text, exc)
            raise
        matches = [self._match(row, name, mode, id_column) for row in rows]
        if min_score is not None:
            matches = [m for m in matches if m.score >= min_score]
        return matches

    @staticmethod
    def _explain_text_failure(handle: Any, name: str, text: str, exc: Exception) -> None:
        """Raise the client's error behind a failed full-text search, if it is one; the
        message is decided from the table's index, never guessed from the engine's text."""
        index = text_index(handle)
        if index is None:
            raise StepFailed(
                ErrorCode.INVALID_QUERY,
                f"table {name!r} has no full-text index yet; use mode=vector",
            ) from exc
        if '"' in text and not has_positions(index):
            raise StepFailed(
                ErrorCode.INVALID_QUERY,
                f"table {name!r} has a full-text index without word positions, which a phrase "
                "search (words in double quotes) needs; search without the quotes (the writer "
                "adds positions when it starts)",
            ) from exc

    def _vector_query(self, handle: Any, vector: NDArray[np.float32]) -> Any:
        return (
            handle.search(vector)
            .distance_type("cosine")
            .nprobes(self.nprobes)
            .refine_factor(self.refine_factor)
        )

    def _hybrid(
        self,
        handle: Any,
        name: str,
        vector: NDArray[np.float32],
        text: str,
        where: str | None,
        k: int,
        min_similarity: float | None,
        *,
        id_column: str,
    ) -> list[Match]:
        """Both searches propose candidates, both score every candidate, fusion orders them."""
        rows, bm25 = self._hybrid_candidates(handle, vector, text, where, depth=max(4 * k, 20))
        query_tokens = tokens(text)
        query_norm = float(np.linalg.norm(vector)) or 1.0
        candidates = []
        for row_id, row in rows.items():
            row_vector = np.asarray(row["vector"], dtype=np.float32)
            row_norm = float(np.linalg.norm(row_vector)) or 1.0
            candidates.append(
                Candidate(
                    id=row_id,
                    similarity=float(row_vector @ vector) / (query_norm * row_norm),
                    bm25=bm25.get(row_id),
                    exact=is_exact(query_tokens, str(row.get("title") or ""), str(row["text"])),
                )
            )
        matches = []
        for ranked in fuse(candidates):
            if min_similarity is not None and not ranked.candidate.exact:
                if ranked.candidate.similarity < min_similarity:
                    continue
            row = {**rows[ranked.id], "_fused": ranked.score}
            matches.append(self._match(row, name, "hybrid", id_column))
            if len(matches) == k:
                break
        return matches

    def _hybrid_candidates(
        self, handle: Any, vector: NDArray[np.float32], text: str, where: str | None, *, depth: int
    ) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
        """The rows either search returns (`depth` each), and the BM25 of every row that has one.

        Lists deeper than k let fusion find rows that both searches rank moderately.
        """
        vector_query = self._vector_query(handle, vector)
        text_query = handle.search(text, query_type="fts")
        if where:
            vector_query = vector_query.where(where, prefilter=True)
            text_query = text_query.where(where, prefilter=True)
        rows: dict[str, dict[str, Any]] = {}
        bm25: dict[str, float] = {}
        for row in text_query.limit(depth).to_list():
            rows[str(row["id"])] = row
            bm25[str(row["id"])] = float(row["_score"])
        for row in vector_query.limit(depth).to_list():
            rows.setdefault(str(row["id"]), row)
        unscored = [row_id for row_id in rows if row_id not in bm25]
        if unscored:
            # The same index scores the rows only the vector side found (same IDF, same BM25);
            # rows without any query token stay unscored.
            only = f"id IN ({quote_list(unscored)})"
            restricted = handle.search(text, query_type="fts").where(
                f"({where}) AND {only}" if where else only, prefilter=True
            )
            for row in restricted.select(["id", "_score"]).limit(len(unscored)).to_list():
                bm25[str(row["id"])] = float(row["_score"])
        return rows, bm25

    @staticmethod
    def _match(row: dict[str, Any], table: str, mode: SearchMode, id_column: str) -> Match:
        metadata = {
            key: value
            for key, value in row.items()
            if key not in HIDDEN_COLUMNS and not key.startswith("_")
        }
        if mode == "hybrid":
            score = float(row["_fused"])
        elif mode == "fulltext":
            score = float(row["_score"])
        else:
            # Cosine distance is in [0, 2]; report similarity so higher means closer.
            score = 1.0 - float(row["_distance"])
        return Match(
            id=str(row[id_column]),
            title=str(row.get("title") or ""),
            text=str(row["text"]),
            score=round(score, 6),
            table=table,
            metadata=metadata,
        )

    def describe(self, embedding_model: str) -> list[dict[str, Any]]:
        """Every table with its row count, indexes and the embedding model that fills it."""
        return [
            describe_table(name, self.table(name), embedding_model) for name in self.table_names()
        ]
