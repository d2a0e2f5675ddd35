"""The knowledge base in LanceDB: one connection per process, tables cached, safe filters."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from skyhigh.events import ErrorCode, Match, StepFailed
from skyhigh.payloads import COLUMN_NAME, FilterScalar, FilterValue

# Columns every knowledge table has; anything else (scalar or list) is metadata.
CORE_COLUMNS = ("id", "title", "text", "vector")


def _sql_literal(value: FilterScalar) -> str:
    # Values are typed by pydantic; strings are quoted with '' doubling, the SQL standard.
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        if not np.isfinite(value):
            raise StepFailed(ErrorCode.INVALID_FILTER, "filter numbers must be finite")
        return repr(value)
    return "'" + value.replace("'", "''") + "'"


def build_where(filter_: dict[str, FilterValue], schema: pa.Schema) -> str:
    """Turn a validated equality filter into a LanceDB SQL predicate.

    Column names must exist in the table (and look like identifiers); values become quoted
    literals, so no part of the client's input is ever spliced into SQL as code.
    """
    clauses = []
    for column, operand in filter_.items():
        if not COLUMN_NAME.match(column) or column not in schema.names or column == "vector":
            known = ", ".join(n for n in schema.names if n != "vector")
            raise StepFailed(
                ErrorCode.INVALID_FILTER, f"unknown filter column {column!r}; columns: {known}"
            )
        values = operand if isinstance(operand, list) else [operand]
        literals = ", ".join(_sql_literal(v) for v in values)
        is_list = pa.types.is_list(schema.field(column).type) or pa.types.is_large_list(
            schema.field(column).type
        )
        if is_list:
            clauses.append(f"array_has_any({column}, [{literals}])")
        elif len(values) == 1:
            clauses.append(f"{column} = {literals}")
        else:
            clauses.append(f"{column} IN ({literals})")
    return " AND ".join(clauses)


class KnowledgeBase:
    """Search LanceDB tables of passages.

    Usage::

        kb = KnowledgeBase("./lancedb_data", default_table="knowledge")
        matches = kb.search(vector, k=5, filter={"category": "baggage"})
    """

    def __init__(self, uri: str, *, default_table: str) -> None:
        self.uri = uri
        self.default_table = default_table
        self._db = lancedb.connect(uri)
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
                raise StepFailed(
                    ErrorCode.TABLE_NOT_FOUND,
                    f"no knowledge table {name!r} in {self.uri}; tables: {self.table_names()}",
                ) from exc
            self._tables[name] = table
            return table

    def table_names(self) -> list[str]:
        return sorted(self._db.list_tables().tables)

    def search(
        self,
        vector: NDArray[np.float32] | Sequence[float],
        *,
        table: str | None = None,
        k: int = 5,
        filter: dict[str, FilterValue] | None = None,
    ) -> list[Match]:
        name = table or self.default_table
        handle = self.table(name)
        query = handle.search(np.asarray(vector, dtype=np.float32)).distance_type("cosine")
        if filter:
            query = query.where(build_where(filter, handle.schema), prefilter=True)
        rows = query.limit(k).to_list()
        return [self._match(row, name) for row in rows]

    @staticmethod
    def _match(row: dict[str, Any], table: str) -> Match:
        metadata = {
            key: value
            for key, value in row.items()
            if key not in CORE_COLUMNS and not key.startswith("_")
        }
        # Cosine distance is in [0, 2]; report similarity so higher means closer.
        score = 1.0 - float(row["_distance"])
        return Match(
            id=str(row["id"]),
            title=str(row.get("title") or ""),
            text=str(row["text"]),
            score=round(score, 6),
            table=table,
            metadata=metadata,
        )
