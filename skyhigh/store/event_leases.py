"""The worker side of the event store: claims, leases, hand-backs and the sweeper's query.

Workers claim an event with a lease they renew while working; a duplicate hint for a
finished or leased event is a no-op; an event whose lease ran out (its worker died) is taken
over by the next claim; `stale` finds what a sweeper must hint again. EventStore inherits
these; they need only its session factory.

Fair claims (scale mode, `claim_next`): a broker message only wakes a worker, which then
claims the next event in fair order, whatever key the message named. Owners with claimable
work take turns: the owner served least recently (`owner_turns.served_at`; never served
comes first) goes next, its oldest event first. So one owner's backlog delays another
owner's next event by about one event per worker (those already running), not by the
backlog, across any number of workers and API processes: the order lives in the store, not
in the broker's first-in-first-out lists. Every event still gets its own key in some message, so
there are never fewer hints than claimable events; a hint whose turn went to another event
leaves its own event to a later hint (or the sweeper).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, String, func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from skyhigh.domain.events import ErrorCode, EventError, EventStatus
from skyhigh.store.db import Base, now
from skyhigh.store.event_rows import UNLEASED, ClaimedEvent, EventRow, finish_row

# Owners tried per look at the queue; when other workers took all of them, look again.
FAIR_CANDIDATES = 8


class OwnerTurnRow(Base):
    """When each owner last had an event claimed by `claim_next` (migration 0004)."""

    __tablename__ = "owner_turns"

    owner: Mapped[str] = mapped_column(String(256), primary_key=True)
    served_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def _claimable(moment: datetime) -> Any:
    return (EventRow.status == EventStatus.QUEUED) | (
        (EventRow.status == EventStatus.PROCESSING) & (EventRow.lease_expires_at < moment)
    )


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
        claimable = _claimable(started)
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

    def event_type_of(self, key: str) -> str | None:
        with self._session() as session:
            return session.scalar(select(EventRow.event_type).where(EventRow.key == key))

    def claim_next(
        self, event_types: Collection[str], *, max_attempts: int, owner: str, lease_s: float
    ) -> ClaimedEvent | None:
        """Claim the next event of `event_types` in fair order (see the module docstring).

        Each candidate goes through `claim`, so exactly-once, lease take-over and
        MAX_ATTEMPTS hold as for a named key. None when nothing of these types is claimable.
        """
        while candidates := self._fair_candidates(event_types):
            for key, event_owner in candidates:
                claimed = self.claim(key, max_attempts=max_attempts, owner=owner, lease_s=lease_s)
                if claimed is not None:
                    self._record_turn(event_owner)
                    return claimed
            # Every candidate went to another worker (or ran out of attempts): look again.
        return None

    def _fair_candidates(self, event_types: Collection[str]) -> list[tuple[str, str]]:
        """(key, owner) of each owner's oldest claimable event, least recently served first."""
        first = (
            select(EventRow.owner, func.min(EventRow.seq).label("seq"))
            .where(_claimable(now()), EventRow.event_type.in_(list(event_types)))
            .group_by(EventRow.owner)
            .subquery()
        )
        query = (
            select(EventRow.key, EventRow.owner)
            .join(first, EventRow.seq == first.c.seq)
            .outerjoin(OwnerTurnRow, OwnerTurnRow.owner == first.c.owner)
            .order_by(OwnerTurnRow.served_at.asc().nulls_first(), first.c.seq)
            .limit(FAIR_CANDIDATES)
        )
        with self._session() as session:
            return [(row[0], row[1]) for row in session.execute(query)]

    def _record_turn(self, event_owner: str) -> None:
        moment = now()
        with self._session() as session:
            updated: CursorResult[Any] = session.execute(  # type: ignore[assignment]
                update(OwnerTurnRow)
                .where(OwnerTurnRow.owner == event_owner)
                .values(served_at=moment)
            )
            if updated.rowcount == 1:
                return
        try:
            with self._session() as session:
                session.add(OwnerTurnRow(owner=event_owner, served_at=moment))
        except IntegrityError:
            pass  # another worker recorded this owner's first turn at the same moment

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
