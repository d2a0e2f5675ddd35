"""Client values as LanceDB SQL: typed, quoted literals, never code.

A filter is checked against the table's column types before any SQL exists, so a value of the
wrong type is the client's `invalid_filter` naming the column and the type it needs, not an
engine error. Strings are quoted with '' doubling, the SQL standard.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from skyhigh.domain.events import ErrorCode, StepFailed
from skyhigh.domain.payloads import COLUMN_NAME, FilterScalar, FilterValue
from skyhigh.knowledge.tables import OWNER_COLUMN, filterable_columns, is_owned


@dataclass(frozen=True)
class Reader:
    """Whose rows of a per-owner table (transcripts) a search sees: one owner namespace
    (skyhigh.domain.tenancy.owner_namespace), or every owner's (`Reader.everyone()`, admin).
    A search without a reader sees no per-owner rows at all."""

    namespace: str | None

    @classmethod
    def everyone(cls) -> Reader:
        return cls(None)


def quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def quote_list(values: Sequence[str]) -> str:
    return ", ".join(quote(v) for v in values)


def _invalid(column: str, expected: str, value: FilterScalar) -> StepFailed:
    # The value's type, not the value: error messages never echo client input at length.
    return StepFailed(
        ErrorCode.INVALID_FILTER,
        f"filter {column!r} needs {expected}, got {type(value).__name__}",
    )


def _integer_literal(column: str, column_type: pa.DataType, value: FilterScalar) -> str:
    expected = f"an integer ({column_type})"
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(column, expected, value)
    bits = column_type.bit_width
    if pa.types.is_unsigned_integer(column_type):
        low, high = 0, 2**bits - 1
    else:
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if not low <= value <= high:
        raise StepFailed(
            ErrorCode.INVALID_FILTER, f"filter {column!r} needs {expected} from {low} to {high}"
        )
    return str(value)


def _float_literal(column: str, value: FilterScalar) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(column, "a number", value)
    if not math.isfinite(value):
        raise StepFailed(ErrorCode.INVALID_FILTER, "filter numbers must be finite")
    return repr(float(value))


def _timestamp_literal(column: str, value: FilterScalar) -> str:
    expected = "an ISO 8601 timestamp such as 2024-05-01T12:00:00Z"
    if not isinstance(value, str):
        raise _invalid(column, expected, value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise StepFailed(ErrorCode.INVALID_FILTER, f"filter {column!r} needs {expected}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return f"TIMESTAMP '{moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=' ')}'"


def typed_literal(column: str, column_type: pa.DataType, value: FilterScalar) -> str:
    """`value` as a SQL literal of `column_type`, or invalid_filter saying what it needs."""
    types = pa.types
    if types.is_boolean(column_type):
        if not isinstance(value, bool):
            raise _invalid(column, "true or false", value)
        return "TRUE" if value else "FALSE"
    if types.is_integer(column_type):
        return _integer_literal(column, column_type, value)
    if types.is_floating(column_type):
        return _float_literal(column, value)
    if types.is_timestamp(column_type) or types.is_date(column_type):
        return _timestamp_literal(column, value)
    if types.is_string(column_type) or types.is_large_string(column_type):
        if not isinstance(value, str):
            raise _invalid(column, "a string", value)
        return quote(value)
    raise StepFailed(
        ErrorCode.INVALID_FILTER, f"column {column!r} ({column_type}) is not filterable"
    )


def _is_list(column_type: pa.DataType) -> bool:
    return bool(pa.types.is_list(column_type) or pa.types.is_large_list(column_type))


def build_where(filter_: dict[str, FilterValue], schema: pa.Schema) -> str:
    """A validated equality filter as a LanceDB SQL predicate.

    Column names must exist in the table (and look like identifiers), values must fit their
    column's type; values become quoted literals, so no part of the client's input is ever
    spliced into SQL as code. Raises invalid_filter.
    """
    clauses = []
    filterable = filterable_columns(schema)
    for column, operand in filter_.items():
        if not COLUMN_NAME.match(column) or column not in filterable:
            raise StepFailed(
                ErrorCode.INVALID_FILTER,
                f"unknown filter column {column!r}; columns: {', '.join(filterable)}",
            )
        values = operand if isinstance(operand, list) else [operand]
        column_type = schema.field(column).type
        if _is_list(column_type):
            item_type = column_type.value_type
            literals = ", ".join(typed_literal(column, item_type, v) for v in values)
            clauses.append(f"array_has_any({column}, [{literals}])")
            continue
        literals = ", ".join(typed_literal(column, column_type, v) for v in values)
        if len(values) == 1:
            clauses.append(f"{column} = {literals}")
        else:
            clauses.append(f"{column} IN ({literals})")
    return " AND ".join(clauses)


def owner_clause(schema: pa.Schema, reader: Reader | None) -> str | None:
    """The predicate that keeps a per-owner table to the reader's rows (None: no limit)."""
    if not is_owned(schema) or (reader is not None and reader.namespace is None):
        return None
    if reader is None or reader.namespace is None or OWNER_COLUMN not in schema.names:
        # No reader, or rows whose owner is not recorded yet (the writer adds it at start):
        # nothing is shown rather than someone else's transcript.
        return "FALSE"
    return f"{OWNER_COLUMN} = {quote(reader.namespace)}"


def where_clause(
    filter_: dict[str, FilterValue] | None, schema: pa.Schema, reader: Reader | None
) -> str | None:
    """The client's filter and the owner limit together (None: every row)."""
    clauses = [c for c in (owner_clause(schema, reader),) if c is not None]
    if filter_:
        clauses.append(f"({build_where(filter_, schema)})")
    return " AND ".join(clauses) or None
