"""Durable event store over SQLAlchemy: SQLite by default, Postgres (psycopg 3) at scale.

Every method is synchronous and short; the API calls them through a worker thread
(`anyio.to_thread`) so the event loop never waits on the database.

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

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String, func, select, update
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from skyhigh.domain.errors import EventConflict, EventNotFound, InvalidCursor
from skyhigh.domain.events import ErrorCode, EventError, EventRecord, EventStatus
from skyhigh.domain.tenancy import STATIC_OWNER, public_event_id
from skyhigh.store.db import Base, aware, create_engine, now, transactions
from skyhigh.store.migrate import upgrade

KEY_LENGTH = 192  # >= skyhigh.domain.tenancy.KEY_MAX_LENGTH (migration 0003)


class EventRow(Base):
    __tablename__ = "events"

    # Surrogate key orders events by arrival for cursors and queue positions.
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The stored key (owner namespace + the client's id), not the public event id.
    event_id: Mapped[str] = mapped_column(String(KEY_LENGTH), unique=True)
    owner: Mapped[str] = mapped_column(String(256))
    event_type: Mapped[str] = mapped_column(String(64))
    body_sha256: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    # Leases (see EventStore.claim): who works on a processing event, and until when.
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_events_status_seq", "status", "seq"),
        Index("ix_events_type_seq", "event_type", "seq"),
        Index("ix_events_status_lease", "status", "lease_expires_at"),
        Index("ix_events_owner_seq", "owner", "seq"),
    )


@dataclass(frozen=True)
class NewEvent:
    event_id: str
    event_type: str
    body_sha256: str
    payload: dict[str, Any]
    request_id: str | None = None
    owner: str = STATIC_OWNER


# What a processing event returns to when its worker lets go of it.
_UNLEASED: dict[str, Any] = {
    "status": EventStatus.QUEUED,
    "started_at": None,
    "lease_owner": None,
    "lease_expires_at": None,
    "enqueued_at": None,
}


@dataclass(frozen=True)
class CreateOutcome:
    record: EventRecord
    created: bool  # False: an identical event was already stored (idempotent replay)


@dataclass(frozen=True)
class ClaimedEvent:
    event_id: str
    event_type: str
    payload: dict[str, Any]
    attempts: int
    request_id: str | None
    owner: str = STATIC_OWNER


@dataclass(frozen=True)
class EventPage:
    items: list[EventRecord]
    next_cursor: str | None


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"seq": seq}).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        seq = json.loads(base64.urlsafe_b64decode(padded))["seq"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidCursor(cursor) from exc
    if not isinstance(seq, int):
        raise InvalidCursor(cursor)
    return seq


def _dialect_insert(dialect: str) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING exists on SQLite and Postgres, with one API each."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


class EventStore:
    """Events and their lifecycle: create (idempotent), get, list, claim, complete, fail, recover.

    Usage::

        store = EventStore("sqlite:///./events.db")
        outcome = store.create(NewEvent(event_id="e1", event_type="query", ...))
        claimed = store.claim("e1")          # queued -> processing, attempts += 1
        store.complete("e1", {"matches": []})
    """

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL") -> None:
        self.engine: Engine = create_engine(url, sqlite_synchronous=sqlite_synchronous)
        upgrade(self.engine)
        self._session = transactions(self.engine)
        table = EventRow.__table__
        self._insert_new = (
            _dialect_insert(self.engine.dialect.name)(table)
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(table.c.event_id)
        )

    def close(self) -> None:
        self.engine.dispose()

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

        Outcomes are in input order; an id already taken by a different body gives an
        EventConflict in its place instead of failing the batch.
        """
        created_at = now()
        rows = [
            {
                "event_id": new.event_id,
                "owner": new.owner,
                "event_type": new.event_type,
                "body_sha256": new.body_sha256,
                "payload": new.payload,
                "status": EventStatus.QUEUED,
                "request_id": new.request_id,
                "attempts": 0,
                "created_at": created_at,
                "enqueued_at": created_at,
            }
            for new in news
        ]
        with self._session() as session:
            # RETURNING names exactly the rows this statement inserted, whatever other
            # writers (other API processes on Postgres) commit at the same time. One cached
            # Core statement with many parameter sets: compiling a fresh multi-VALUES insert
            # per batch took half of the store thread's time under load.
            inserted = set(session.execute(self._insert_new, rows).scalars())
            # Only ids the insert did not take (a replay, a conflict, a duplicate within the
            # batch) are read back: a new event's record is what was just written.
            outcomes: dict[int, CreateOutcome | EventConflict] = {}
            for index, new in enumerate(news):
                if new.event_id in inserted:
                    inserted.discard(new.event_id)  # the first of any duplicates in the batch
                    record = _queued_record(new, created_at)
                    outcomes[index] = CreateOutcome(record=record, created=True)
            taken = [(index, new) for index, new in enumerate(news) if index not in outcomes]
            if taken:
                outcomes.update(self._existing(session, taken))
            return [outcomes[index] for index in range(len(news))]

    def _existing(
        self, session: Session, taken: list[tuple[int, NewEvent]]
    ) -> dict[int, CreateOutcome | EventConflict]:
        """Outcomes for ids already stored: a replay of the same body, or a conflict."""
        ids = {new.event_id for _, new in taken}
        rows = {
            row.event_id: row
            for row in session.scalars(select(EventRow).where(EventRow.event_id.in_(ids)))
        }
        outcomes: dict[int, CreateOutcome | EventConflict] = {}
        for index, new in taken:
            row = rows[new.event_id]
            if row.body_sha256 != new.body_sha256:
                outcomes[index] = EventConflict(public_event_id(new.event_id))
            else:
                record = self._record(session, row, with_position=False)
                outcomes[index] = CreateOutcome(record=record, created=False)
        return outcomes

    # --- reads ---

    def get(self, event_id: str) -> EventRecord:
        with self._session() as session:
            return self._record(session, self._row(session, event_id))

    def lookup(self, event_id: str) -> tuple[EventRecord, str] | None:
        """The event and its body hash, or None: lets intake answer replays before spooling."""
        with self._session() as session:
            row = session.scalars(
                select(EventRow).where(EventRow.event_id == event_id)
            ).one_or_none()
            if row is None:
                return None
            return self._record(session, row, with_position=False), row.body_sha256

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
            query = query.where(EventRow.seq < _decode_cursor(cursor))
        with self._session() as session:
            rows = [*session.scalars(query)]
            page = rows[:limit]
            items = [self._record(session, row, with_position=False) for row in page]
            if show_owner:
                items = [
                    item.model_copy(update={"owner": row.owner})
                    for item, row in zip(items, page, strict=True)
                ]
        next_cursor = _encode_cursor(page[-1].seq) if len(rows) > limit else None
        return EventPage(items=items, next_cursor=next_cursor)

    # --- worker side ---

    def claim(
        self, event_id: str, *, max_attempts: int, owner: str, lease_s: float
    ) -> ClaimedEvent | None:
        """Take a queued event, or one whose lease ran out, and count the attempt.

        Returns None when the event is finished or someone else holds a live lease, so a
        duplicate hint never processes an event twice. An event that has used up its attempts
        is failed with `max_attempts` instead of being claimed.
        """
        started = now()
        claimable = (EventRow.status == EventStatus.QUEUED) | (
            (EventRow.status == EventStatus.PROCESSING) & (EventRow.lease_expires_at < started)
        )
        with self._session() as session:
            row = session.scalars(
                select(EventRow).where(EventRow.event_id == event_id, claimable).with_for_update()
            ).one_or_none()
            if row is None:
                return None
            if row.attempts >= max_attempts:
                self._finish(
                    row,
                    EventStatus.FAILED,
                    error=EventError(
                        code=ErrorCode.MAX_ATTEMPTS,
                        message=f"gave up after {row.attempts} attempts "
                        f"(MAX_ATTEMPTS={max_attempts})",
                    ),
                )
                return None
            attempt = row.attempts + 1
            # Conditional update: only one claimer wins even without row locks (SQLite).
            won: CursorResult[Any] = session.execute(  # type: ignore[assignment]
                update(EventRow)
                .where(
                    EventRow.event_id == event_id,
                    EventRow.attempts == row.attempts,
                    claimable,
                )
                .values(
                    status=EventStatus.PROCESSING,
                    attempts=attempt,
                    started_at=started,
                    lease_owner=owner,
                    lease_expires_at=started + timedelta(seconds=lease_s),
                )
                .execution_options(synchronize_session=False)
            )
            if won.rowcount != 1:
                return None
            return ClaimedEvent(
                event_id=row.event_id,
                event_type=row.event_type,
                payload=dict(row.payload),
                attempts=attempt,
                request_id=row.request_id,
                owner=row.owner,
            )

    def renew(self, event_id: str, *, owner: str, lease_s: float) -> bool:
        """Extend a lease this owner still holds; False when it was lost (taken over, done)."""
        with self._session() as session:
            renewed: CursorResult[Any] = session.execute(  # type: ignore[assignment]
                update(EventRow)
                .where(self._held(event_id, owner))
                .values(lease_expires_at=now() + timedelta(seconds=lease_s))
            )
            return renewed.rowcount == 1

    def complete(
        self, event_id: str, result: dict[str, Any], *, owner: str | None = None
    ) -> EventRecord | None:
        """Record the result; None when `owner` no longer holds the lease (nothing written)."""
        return self._conclude(event_id, owner, EventStatus.COMPLETED, result=result)

    def fail(
        self, event_id: str, error: EventError, *, owner: str | None = None
    ) -> EventRecord | None:
        """Record the failure; None when `owner` no longer holds the lease (nothing written)."""
        return self._conclude(event_id, owner, EventStatus.FAILED, error=error)

    def requeue(self, event_id: str, *, owner: str | None = None) -> None:
        """Put a processing event back (graceful shutdown); its attempt stays counted."""
        condition = (
            (EventRow.event_id == event_id) & (EventRow.status == EventStatus.PROCESSING)
            if owner is None
            else self._held(event_id, owner)
        )
        with self._session() as session:
            session.execute(update(EventRow).where(condition).values(**_UNLEASED))

    def recover(self) -> list[str]:
        """After a crash: put `processing` events back in the queue; return all queued ids.

        Only for the embedded mode, whose one process is the only worker of its store: at
        its start-up nobody else can hold a lease. Processes sharing a store rely on leases
        and `stale` instead.
        """
        with self._session() as session:
            session.execute(
                update(EventRow)
                .where(EventRow.status == EventStatus.PROCESSING)
                .values(**_UNLEASED)
            )
            query = (
                select(EventRow.event_id)
                .where(EventRow.status == EventStatus.QUEUED)
                .order_by(EventRow.seq)
            )
            return [*session.scalars(query)]

    def stale(self, *, requeue_after_s: float, limit: int = 1000) -> list[tuple[str, str]]:
        """Events to hint again: queued but not handed to the broker for `requeue_after_s`
        (the API died before enqueueing, or the broker lost its data), or processing with an
        expired lease (the worker died). Marks them enqueued now; oldest first."""
        moment = now()
        due = (
            (EventRow.status == EventStatus.QUEUED)
            & (
                EventRow.enqueued_at.is_(None)
                | (EventRow.enqueued_at < moment - timedelta(seconds=requeue_after_s))
            )
        ) | ((EventRow.status == EventStatus.PROCESSING) & (EventRow.lease_expires_at < moment))
        query = select(EventRow.event_id, EventRow.event_type).where(due)
        with self._session() as session:
            rows = [
                (row[0], row[1])
                for row in session.execute(query.order_by(EventRow.seq).limit(limit))
            ]
            if rows:
                ids = [event_id for event_id, _ in rows]
                session.execute(
                    update(EventRow).where(EventRow.event_id.in_(ids)).values(enqueued_at=moment)
                )
            return rows

    def count_active(self) -> int:
        """Events accepted and not finished (queued or processing), across all processes."""
        active = EventRow.status.in_([EventStatus.QUEUED, EventStatus.PROCESSING])
        with self._session() as session:
            return int(session.scalar(select(func.count()).where(active)) or 0)

    # --- helpers ---

    @staticmethod
    def _held(event_id: str, owner: str) -> Any:
        return (
            (EventRow.event_id == event_id)
            & (EventRow.status == EventStatus.PROCESSING)
            & (EventRow.lease_owner == owner)
        )

    def _conclude(
        self,
        event_id: str,
        owner: str | None,
        status: EventStatus,
        *,
        result: dict[str, Any] | None = None,
        error: EventError | None = None,
    ) -> EventRecord | None:
        with self._session() as session:
            query = select(EventRow).where(EventRow.event_id == event_id)
            if owner is not None:
                query = query.where(self._held(event_id, owner))
            row = session.scalars(query.with_for_update()).one_or_none()
            if row is None:
                if owner is None:
                    raise EventNotFound(public_event_id(event_id))
                return None
            self._finish(row, status, result=result, error=error)
            return self._record(session, row, with_position=False)

    @staticmethod
    def _row(session: Session, event_id: str) -> EventRow:
        row = session.scalars(select(EventRow).where(EventRow.event_id == event_id)).one_or_none()
        if row is None:
            raise EventNotFound(public_event_id(event_id))
        return row

    @staticmethod
    def _finish(
        row: EventRow,
        status: EventStatus,
        *,
        result: dict[str, Any] | None = None,
        error: EventError | None = None,
    ) -> None:
        row.status = status
        row.finished_at = now()
        row.result = result
        row.error_code = error.code if error else None
        row.error_message = error.message if error else None
        row.lease_owner = None
        row.lease_expires_at = None

    @staticmethod
    def _record(session: Session, row: EventRow, *, with_position: bool = True) -> EventRecord:
        position = None
        if with_position and row.status == EventStatus.QUEUED:
            ahead = session.scalar(
                select(func.count()).where(
                    EventRow.status == EventStatus.QUEUED, EventRow.seq < row.seq
                )
            )
            position = int(ahead or 0)
        error = None
        if row.error_code is not None:
            error = EventError(code=row.error_code, message=row.error_message or "")
        return EventRecord(
            event_id=public_event_id(row.event_id),
            event_type=row.event_type,
            status=EventStatus(row.status),
            created_at=aware(row.created_at) or now(),
            started_at=aware(row.started_at),
            finished_at=aware(row.finished_at),
            attempts=row.attempts,
            queue_position=position,
            result=row.result,
            error=error,
        )


def _queued_record(new: NewEvent, created_at: datetime) -> EventRecord:
    """The record of an event just inserted, as `_record` would read it back."""
    return EventRecord(
        event_id=public_event_id(new.event_id),
        event_type=new.event_type,
        status=EventStatus.QUEUED,
        created_at=created_at,
        attempts=0,
    )
