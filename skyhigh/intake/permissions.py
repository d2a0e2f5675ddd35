"""What a principal may submit, decided before the 202 (skyhigh.domain.tenancy has the scopes).

Refusing here, not in the worker, means a refused write never becomes a stored event that
fails later: the client gets a 403 naming the missing scope, or a 422 saying why its document's
metadata cannot be added, and nothing is queued.
"""

from __future__ import annotations

import anyio
from pydantic import BaseModel

from skyhigh.config import KnowledgeSettings
from skyhigh.domain.errors import InvalidInput
from skyhigh.domain.events import StepFailed
from skyhigh.domain.payloads import DocumentPayload
from skyhigh.domain.tenancy import Principal, Scope
from skyhigh.knowledge.documents import check_metadata_columns
from skyhigh.knowledge.search import KnowledgeBase, documents_schema

# Event types that write the shared knowledge base (and may create its tables).
KNOWLEDGE_WRITES = frozenset({"document", "document_delete"})


def authorize(principal: Principal, event_type: str, payload: BaseModel) -> None:
    """Raise Forbidden unless `principal` may submit this event."""
    principal.require(Scope.EVENTS_WRITE, "submitting events")
    if event_type in KNOWLEDGE_WRITES:
        principal.require(Scope.KNOWLEDGE_WRITE, f"a {event_type!r} event")
    if getattr(payload, "index_transcript", False):
        # The transcripts table is part of the shared knowledge base, created on first use.
        principal.require(Scope.KNOWLEDGE_WRITE, "index_transcript")


class KnowledgeGuard:
    """Checks a document's metadata against its table's column cap, off the event loop.

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

    def _columns(self, table: str) -> tuple[str, ...]:
        if table not in self._kb.table_names():
            return self._NEW_TABLE_COLUMNS
        return tuple(self._kb.table(table).schema.names)
