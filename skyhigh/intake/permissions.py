"""What a principal may submit, decided before the 202 (skyhigh.domain.tenancy has the scopes).

Refusing here, not in the worker, means a refused write never becomes a stored event that
fails later: the client gets a 403 naming the missing scope, or a 422 saying why its document's
metadata cannot be added or why its filter cannot fit the table, and nothing is queued.
"""

from __future__ import annotations

import anyio
import pyarrow as pa
from pydantic import BaseModel

from skyhigh.config import KnowledgeSettings
from skyhigh.domain.errors import InvalidInput
from skyhigh.domain.events import StepFailed
from skyhigh.domain.payloads import DocumentPayload, LookupOptions
from skyhigh.domain.tenancy import Principal, Scope
from skyhigh.knowledge.documents import check_metadata_columns
from skyhigh.knowledge.search import KnowledgeBase
from skyhigh.knowledge.sql import build_where
from skyhigh.knowledge.tables import documents_schema
from skyhigh.processing.registry import writes_knowledge


def authorize(principal: Principal, event_type: str, payload: BaseModel) -> None:
    """Raise Forbidden unless `principal` may submit this event.

    `index_transcript` needs no more than `events:write`: the row it writes belongs to the
    submitter and only they (and admins) can find it (skyhigh.knowledge.tables).
    """
    principal.require(Scope.EVENTS_WRITE, "submitting events")
    if writes_knowledge(event_type):
        principal.require(Scope.KNOWLEDGE_WRITE, f"a {event_type!r} event")


class KnowledgeGuard:
    """Checks a document's metadata against its table's column cap, and a lookup's filter
    against its table's column types, off the event loop.

    Usage::

        guard = KnowledgeGuard(kb, settings.knowledge)
        await guard.check(payload, loc=("body", "event_data"))   # raises InvalidInput
    """

    # The columns a new documents table starts with (the vector size does not matter here).
    _NEW_TABLE_COLUMNS = tuple(documents_schema(1).names)

    def __init__(self, kb: KnowledgeBase, settings: KnowledgeSettings) -> None:
        self._kb = kb
        self._default_table = settings.knowledge_table
        self._max_columns = settings.knowledge_max_metadata_columns

    async def check(self, payload: BaseModel, *, loc: tuple[str, ...]) -> None:
        if isinstance(payload, LookupOptions) and payload.filter:
            await self._check_filter(payload, loc=loc)
        if not isinstance(payload, DocumentPayload) or not payload.metadata:
            return
        table = payload.table or self._default_table
        columns = await anyio.to_thread.run_sync(self._columns, table)
        try:
            check_metadata_columns(
                columns, payload.metadata, max_columns=self._max_columns, table=table
            )
        except StepFailed as failure:
            raise InvalidInput.at(failure, *loc, "metadata") from None

    async def _check_filter(self, lookup: LookupOptions, *, loc: tuple[str, ...]) -> None:
        """A filter that cannot fit the table's columns is refused before the 202 (a table
        that does not exist yet is left to the lookup step: a document may be creating it)."""
        assert lookup.filter is not None
        table = lookup.table or self._default_table
        schema = await anyio.to_thread.run_sync(self._schema, table)
        if schema is None:
            return
        try:
            build_where(lookup.filter, schema)
        except StepFailed as failure:
            raise InvalidInput.at(failure, *loc, "filter") from None

    def _schema(self, table: str) -> pa.Schema | None:
        if table not in self._kb.table_names():
            return None
        schema: pa.Schema = self._kb.table(table).schema
        return schema

    def _columns(self, table: str) -> tuple[str, ...]:
        if table not in self._kb.table_names():
            return self._NEW_TABLE_COLUMNS
        return tuple(self._kb.table(table).schema.names)
