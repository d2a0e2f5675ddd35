"""Durable event store over SQLAlchemy: SQLite by default, Postgres (psycopg 3) at scale.

Every method is synchronous and short; the API calls them through a worker thread
(`anyio.to_thread`, or intake's commit thread for `create_many`) so the event loop never waits
on the database.

The store is the source of truth; a broker only carries hints ("look at event e1"). Workers
claim an event with a lease they renew while working (`claim`, `renew`); a duplicate hint for
a finished or leased event is a no-op; an event whose lease ran out (its worker died) is taken
over by the next claim; `stale` finds what a sweeper must hint again (never enqueued, lost by
the broker, or abandoned). Outcomes are written only by the lease holder, so a worker that lost
its lease cannot overwrite its successor's result.

Events are keyed by their stored key (skyhigh.domain.tenancy.event_key: the owner's namespace
plus the client's event id); every method takes that key, and every record it returns carries
the client's own `event_id` (`public_event_id`), so nothing outside the store sees keys.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import DateTime, bindparam, func, select, text
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from skyhigh.domain.errors import EventConflict, EventNotFound
from skyhigh.domain.events import EventError, EventRecord, EventStatus
from skyhigh.domain.tenancy import public_event_id
from skyhigh.store.cursors import decode_cursor, encode_cursor
from skyhigh.store.db import autocommit_engine, aware, create_engine, now, transactions
from skyhigh.store.event_leases import EventLeases
from skyhigh.store.event_rows import (
    KEY_LENGTH,
    ClaimedEvent,
    CreateOutcome,
    EventPage,
    EventRow,
    NewEvent,
    finish_row,
    to_record,
)
from skyhigh.store.migrate import upgrade

__all__ = [
    "KEY_LENGTH",
    "ClaimedEvent",
    "CreateOutcome",
    "EventPage",
    "EventRow",
    "EventStore",
    "NewEvent",
]


# Intake's group commit: the whole batch in one statement of fixed text and one JSON parameter
# (json.dumps is C), read back as rows by the database. Measured under load, each alternative
# cost the store thread Python time, holding the GIL the event loop needs: a multi-VALUES
# statement has a new text per batch size (compiled by SQLAlchemy, parsed again by psycopg past
# its 50 cached parameters: 40 % of the thread), one array per column goes through psycopg's
# Python array dumpers, and on SQLite each RETURNING row is one more step that takes the GIL
# (the row count says whether every key was new; only otherwise are the rows read back).
_COLUMNS = (
    "INSERT INTO events (event_id, owner, event_type, body_sha256, payload, status,"
    " request_id, attempts, created_at, enqueued_at)"
)
_PG_INSERT_NEW = text(
    f"{_COLUMNS} SELECT k, o, t, h, p, :status, r, 0, :at, :at"
    " FROM json_to_recordset(CAST(:rows AS json))"
    " AS u(k varchar, o varchar, t varchar, h varchar, p json, r varchar)"
    " ON CONFLICT (event_id) DO NOTHING"
)
# `WHERE true` lets ON CONFLICT follow a SELECT; the bind type writes `at` as the DateTime
# column does.
_SQLITE_INSERT_NEW = text(
    f"{_COLUMNS} SELECT json_extract(value, '$.k'), json_extract(value, '$.o'),"
    " json_extract(value, '$.t'), json_extract(value, '$.h'), json_extract(value, '$.p'),"
    " :status, json_extract(value, '$.r'), 0, :at, :at"
    " FROM json_each(:rows) WHERE true ON CONFLICT (event_id) DO NOTHING"
).bindparams(bindparam("at", type_=DateTime(timezone=True)))


class EventStore(EventLeases):
    """Events and their lifecycle: create (idempotent), get, list, claim, complete, fail, recover.

    Usage::

        store = EventStore("sqlite:///./events.db")
        outcome = store.create(NewEvent(key="e1", event_type="query", ...))
        claimed = store.claim("e1")          # queued -> processing, attempts += 1
        store.complete("e1", {"matches": []})
    """

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL") -> None:
        self.engine: Engine = create_engine(url, sqlite_synchronous=sqlite_synchronous)
        upgrade(self.engine)
        self._session = transactions(self.engine)
        self._postgres = self.engine.dialect.name == "postgresql"
        self._autocommit = autocommit_engine(self.engine)

    def close(self) -> None:
        self.engine.dispose()
        self._autocommit.dispose()

    def ping(self) -> None:
        with self._session() as session:
            session.execute(select(1))

    # --- intake ---

    def create(self, new: NewEvent) -> CreateOutcome:
        """Store a queued event, or return the existing one when the same body is replayed."""
        outcome = self.create_many([new])[0]
        if isinstance(outcome, EventConflict):
            raise outcome
        return outcome

    def create_many(self, news: Sequence[NewEvent]) -> list[CreateOutcome | EventConflict]:
        """Store several events in ONE transaction (group commit: one fsync for all).

        Outcomes are in input order; a key already taken by a different body gives an
        EventConflict in its place instead of failing the batch.
        """
        created_at = now()
        rows = [
            {
                "k": new.key,  # the event_id column holds the key
                "o": new.owner,
                "t": new.event_type,
                "h": new.body_sha256,
                "p": new.payload,
                "r": new.request_id,
            }
            for new in news
        ]
        params = {"status": EventStatus.QUEUED.value, "at": created_at, "rows": json.dumps(rows)}
        try:
            return self._insert_new(news, params, created_at)
        except DBAPIError as error:
            # Intake's connections are not pinged at checkout (skyhigh.store.db): one a
            # database restart dropped fails here, is thrown away, and the batch goes once
            # more on a new one. Had the lost attempt committed, `_inserted` still finds
            # its rows by their `created_at`, so they are not taken for replays.
            if not error.connection_invalidated:
                raise
            return self._insert_new(news, params, created_at)

    def _insert_new(
        self, news: Sequence[NewEvent], params: dict[str, Any], created_at: datetime
    ) -> list[CreateOutcome | EventConflict]:
        statement = _PG_INSERT_NEW if self._postgres else _SQLITE_INSERT_NEW
        with Session(self._autocommit) as session:  # the INSERT commits as it runs
            result = session.execute(statement, params)
            count = cast("CursorResult[Any]", result).rowcount
            inserted = self._inserted(session, news, count, created_at)
            return self._outcomes(session, news, inserted, created_at)

    def _inserted(
        self, session: Session, news: Sequence[NewEvent], count: int, created_at: datetime
    ) -> set[str]:
        """The keys an insert of `count` rows took: all of them, unless some were taken
        before; then those whose rows carry this batch's `created_at`, a microsecond time no
        other batch wrote (rows other API processes insert meanwhile carry their own)."""
        keys = {new.key for new in news}
        if count == len(news) == len(keys):
            return keys
        written = session.execute(
            select(EventRow.key, EventRow.created_at).where(EventRow.key.in_(keys))
        )
        return {key for key, at in written if aware(at) == created_at}

    def _outcomes(
        self,
        session: Session,
        news: Sequence[NewEvent],
        inserted: set[str],
        created_at: datetime,
    ) -> list[CreateOutcome | EventConflict]:
        # Only keys the insert did not take (a replay, a conflict, a duplicate within the
        # batch) are read back: a new event's record is what was just written.
        outcomes: dict[int, CreateOutcome | EventConflict] = {}
        for index, new in enumerate(news):
            if new.key in inserted:
                inserted.discard(new.key)  # the first of any duplicates in the batch
                record = _queued_record(new, created_at)
                outcomes[index] = CreateOutcome(record=record, created=True)
        taken = [(index, new) for index, new in enumerate(news) if index not in outcomes]
        if taken:
            outcomes.update(self._existing(session, taken))
        return [outcomes[index] for index in range(len(news))]

    def _existing(
        self, session: Session, taken: list[tuple[int, NewEvent]]
    ) -> dict[int, CreateOutcome | EventConflict]:
        """Outcomes for keys already stored: a replay of the same body, or a conflict."""
        keys = {new.key for _, new in taken}
        rows = {
            row.key: row for row in session.scalars(select(EventRow).where(EventRow.key.in_(keys)))
        }
        outcomes: dict[int, CreateOutcome | EventConflict] = {}
        for index, new in taken:
            row = rows[new.key]
            if row.body_sha256 != new.body_sha256:
                outcomes[index] = EventConflict(public_event_id(new.key))
            else:
                record = to_record(session, row, with_position=False)
                outcomes[index] = CreateOutcome(record=record, created=False)
        return outcomes

    # --- reads ---

    def get(self, key: str) -> EventRecord:
        with self._session() as session:
            return to_record(session, self._row(session, key))

    def lookup(self, key: str) -> tuple[EventRecord, str] | None:
        """The event and its body hash, or None: lets intake answer replays before spooling."""
        with self._session() as session:
            row = session.scalars(select(EventRow).where(EventRow.key == key)).one_or_none()
            if row is None:
                return None
            return to_record(session, row, with_position=False), row.body_sha256

    def list_events(
        self,
        *,
        status: EventStatus | None = None,
        event_type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        owner: str | None = None,
        show_owner: bool = False,
    ) -> EventPage:
        """Newest first; `next_cursor` continues after the last item of this page.

        `owner` lists one principal's events (None: everyone's, for admins, who also get each
        item's `owner` with `show_owner`).
        """
        query = select(EventRow).order_by(EventRow.seq.desc()).limit(limit + 1)
        if owner is not None:
            query = query.where(EventRow.owner == owner)
        if status is not None:
            query = query.where(EventRow.status == status)
        if event_type is not None:
            query = query.where(EventRow.event_type == event_type)
        if cursor is not None:
            query = query.where(EventRow.seq < decode_cursor(cursor))
        with self._session() as session:
            rows = [*session.scalars(query)]
            page = rows[:limit]
            items = [to_record(session, row, with_position=False) for row in page]
            if show_owner:
                items = [
                    item.model_copy(update={"owner": row.owner})
                    for item, row in zip(items, page, strict=True)
                ]
        next_cursor = encode_cursor(page[-1].seq) if len(rows) > limit else None
        return EventPage(items=items, next_cursor=next_cursor)

    # --- worker side ---

    def complete(
        self, key: str, result: dict[str, Any], *, owner: str | None = None
    ) -> EventRecord | None:
        """Record the result; None when `owner` no longer holds the lease (nothing written)."""
        return self._conclude(key, owner, EventStatus.COMPLETED, result=result)

    def fail(self, key: str, error: EventError, *, owner: str | None = None) -> EventRecord | None:
        """Record the failure; None when `owner` no longer holds the lease (nothing written)."""
        return self._conclude(key, owner, EventStatus.FAILED, error=error)

    def count_active(self) -> int:
        """Events accepted and not finished (queued or processing), across all processes."""
        active = EventRow.status.in_([EventStatus.QUEUED, EventStatus.PROCESSING])
        with self._session() as session:
            return int(session.scalar(select(func.count()).where(active)) or 0)

    def count_active_of(self, owner: str) -> int:
        """One principal's unfinished events (per-principal admission)."""
        active = EventRow.status.in_([EventStatus.QUEUED, EventStatus.PROCESSING])
        query = select(func.count()).where(active, EventRow.owner == owner)
        with self._session() as session:
            return int(session.scalar(query) or 0)

    # --- helpers ---

    def _conclude(
        self,
        key: str,
        owner: str | None,
        status: EventStatus,
        *,
        result: dict[str, Any] | None = None,
        error: EventError | None = None,
    ) -> EventRecord | None:
        with self._session() as session:
            query = select(EventRow).where(EventRow.key == key)
            if owner is not None:
                query = query.where(self._held(key, owner))
            row = session.scalars(query.with_for_update()).one_or_none()
            if row is None:
                if owner is None:
                    raise EventNotFound(public_event_id(key))
                return None
            finish_row(row, status, result=result, error=error)
            return to_record(session, row, with_position=False)

    @staticmethod
    def _row(session: Session, key: str) -> EventRow:
        row = session.scalars(select(EventRow).where(EventRow.key == key)).one_or_none()
        if row is None:
            raise EventNotFound(public_event_id(key))
        return row


def _queued_record(new: NewEvent, created_at: datetime) -> EventRecord:
    """The record of an event just inserted, as `to_record` would read it back."""
    return EventRecord(
        event_id=public_event_id(new.key),
        event_type=new.event_type,
        status=EventStatus.QUEUED,
        created_at=created_at,
        attempts=0,
    )
