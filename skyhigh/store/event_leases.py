"""The worker side of the event store: claims, leases, hand-backs and the sweeper's query.

Workers claim an event with a lease they renew while working; a duplicate hint for a
finished or leased event is a no-op; an event whose lease ran out (its worker died) is taken
over by the next claim; `stale` finds what a sweeper must hint again. EventStore inherits
these; they need only its session factory.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from skyhigh.domain.events import ErrorCode, EventError, EventStatus
from skyhigh.store.db import now
from skyhigh.store.event_rows import UNLEASED, ClaimedEvent, EventRow, finish_row


class EventLeases:
    """Lease operations over `_session` (set by EventStore)."""

    _session: Callable[[], AbstractContextManager[Session]]

    def claim(
        self, key: str, *, max_attempts: int, owner: str, lease_s: float
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
                select(EventRow).where(EventRow.key == key, claimable).with_for_update()
            ).one_or_none()
            if row is None:
                return None
            if row.attempts >= max_attempts:
                finish_row(
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
                    EventRow.key == key,
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
                key=row.key,
                event_type=row.event_type,
                payload=dict(row.payload),
                attempts=attempt,
                request_id=row.request_id,
                owner=row.owner,
            )

    def renew(self, key: str, *, owner: str, lease_s: float) -> bool:
        """Extend a lease this owner still holds; False when it was lost (taken over, done)."""
        with self._session() as session:
            renewed: CursorResult[Any] = session.execute(  # type: ignore[assignment]
                update(EventRow)
                .where(self._held(key, owner))
                .values(lease_expires_at=now() + timedelta(seconds=lease_s))
            )
            return renewed.rowcount == 1

    def requeue(self, key: str, *, owner: str | None = None) -> None:
        """Put a processing event back (graceful shutdown); its attempt stays counted."""
        condition = (
            (EventRow.key == key) & (EventRow.status == EventStatus.PROCESSING)
            if owner is None
            else self._held(key, owner)
        )
        with self._session() as session:
            session.execute(update(EventRow).where(condition).values(**UNLEASED))

    def recover(self) -> list[str]:
        """After a crash: put `processing` events back in the queue; return all queued keys.

        Only for the embedded mode, whose one process is the only worker of its store: at
        its start-up nobody else can hold a lease. Processes sharing a store rely on leases
        and `stale` instead.
        """
        with self._session() as session:
            session.execute(
                update(EventRow).where(EventRow.status == EventStatus.PROCESSING).values(**UNLEASED)
            )
            query = (
                select(EventRow.key)
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
        query = select(EventRow.key, EventRow.event_type).where(due)
        with self._session() as session:
            rows = [
                (row[0], row[1])
                for row in session.execute(query.order_by(EventRow.seq).limit(limit))
            ]
            if rows:
                keys = [key for key, _ in rows]
                session.execute(
                    update(EventRow).where(EventRow.key.in_(keys)).values(enqueued_at=moment)
                )
            return rows

    @staticmethod
    def _held(key: str, owner: str) -> Any:
        return (
            (EventRow.key == key)
            & (EventRow.status == EventStatus.PROCESSING)
            & (EventRow.lease_owner == owner)
        )
