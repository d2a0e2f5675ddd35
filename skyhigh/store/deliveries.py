"""Durable webhook deliveries: one row per (event, target URL), in the event store's database.

Lifecycle of a row::

    scheduled --(event finished)--> pending --(2xx)--> delivered
                                       |  \\--(final 4xx, or out of attempts)--> failed
                                       \\--(retryable failure)--> pending, later next_attempt_at

Rows are written at intake (`schedule`), so a crash anywhere afterwards loses nothing: at
startup, `scheduled` rows of finished events are activated and `pending` rows are resumed.
Claiming uses a lease (a conditional update of `next_attempt_at`), so several API processes
sharing one Postgres database never send the same attempt twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    select,
    update,
)
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from skyhigh.domain.events import TERMINAL_STATUSES
from skyhigh.store.db import Base, aware, now, transactions
from skyhigh.store.events import EventRow

SCHEDULED = "scheduled"
PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"


class DeliveryRow(Base):
    __tablename__ = "webhook_deliveries"

    # The Standard Webhooks `webhook-id`: the same for every attempt, so receivers can dedupe.
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column("event_id", String(192))  # the event's stored key
    url: Mapped[str] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Due time while pending; while an attempt runs, the end of its lease.
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Stored once, so every attempt signs and sends the very same bytes.
    body: Mapped[str | None] = mapped_column(Text)
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("event_id", "url", name="uq_webhook_event_url"),
        Index("ix_webhook_due", "status", "next_attempt_at"),
    )


@dataclass(frozen=True)
class Delivery:
    """A claimed delivery, ready to send."""

    id: str
    key: str
    url: str
    attempts: int  # made so far
    body: str


class DeliveryStore:
    """Webhook deliveries over the event store's engine (same database, own table).

    Usage::

        deliveries = DeliveryStore(store.engine)
        deliveries.schedule("e1", ["https://example.com/hook"])  # at intake
        deliveries.activate("e1", body)                           # when e1 finished
        for delivery in deliveries.claim_due(lease_s=30, limit=4): ...
        deliveries.record(delivery.id, attempt, outcome=DELIVERED)
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        DeliveryRow.__table__.create(engine, checkfirst=True)  # type: ignore[attr-defined]
        self._session = transactions(engine)

    def schedule(self, key: str, urls: list[str]) -> bool:
        """Record the targets of an accepted event (idempotent); True if it already finished."""
        for url in urls:
            try:
                with self._session() as session:
                    session.add(
                        DeliveryRow(
                            id=f"msg_{uuid.uuid4().hex}",
                            key=key,
                            url=url,
                            status=SCHEDULED,
                            attempts=0,
                            history=[],
                            created_at=now(),
                        )
                    )
            except IntegrityError:
                pass  # a replayed intake: this target is already recorded
        with self._session() as session:
            status = session.scalar(select(EventRow.status).where(EventRow.key == key))
        # The event may have finished before the rows existed (fast query events): the caller
        # activates them then; `activate` is idempotent, so racing the worker is harmless.
        return status in TERMINAL_STATUSES

    def activate(self, key: str, body: str) -> int:
        """Make an event's scheduled deliveries due now; returns how many were activated."""
        with self._session() as session:
            result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
                update(DeliveryRow)
                .where(DeliveryRow.key == key, DeliveryRow.status == SCHEDULED)
                .values(status=PENDING, body=body, next_attempt_at=now())
            )
            return int(result.rowcount)

    def finished_but_scheduled(self) -> list[str]:
        """Events that finished while their deliveries were never activated (a crash between)."""
        query = (
            select(DeliveryRow.key)
            .join(EventRow, EventRow.key == DeliveryRow.key)
            .where(DeliveryRow.status == SCHEDULED, EventRow.status.in_(TERMINAL_STATUSES))
            .distinct()
        )
        with self._session() as session:
            return [*session.scalars(query)]

    def claim_due(self, *, lease_s: float, limit: int) -> list[Delivery]:
        """Take up to `limit` due deliveries, leasing each for `lease_s` seconds."""
        current = now()
        with self._session() as session:
            rows = session.scalars(
                select(DeliveryRow)
                .where(DeliveryRow.status == PENDING, DeliveryRow.next_attempt_at <= current)
                .order_by(DeliveryRow.next_attempt_at)
                .limit(limit)
            ).all()
            claimed = []
            for row in rows:
                # Conditional on the value we read: a second process claiming the same row loses.
                won: CursorResult[Any] = session.execute(  # type: ignore[assignment]
                    update(DeliveryRow)
                    .where(
                        DeliveryRow.id == row.id,
                        DeliveryRow.status == PENDING,
                        DeliveryRow.next_attempt_at == row.next_attempt_at,
                    )
                    .values(next_attempt_at=current + timedelta(seconds=lease_s))
                )
                if won.rowcount == 1:
                    claimed.append(Delivery(row.id, row.key, row.url, row.attempts, row.body or ""))
            return claimed

    def record(
        self,
        delivery_id: str,
        attempt: dict[str, Any],
        *,
        outcome: str,
        retry_at: datetime | None = None,
    ) -> None:
        """Append one attempt; outcome DELIVERED/FAILED is final, PENDING retries at retry_at."""
        with self._session() as session:
            row = session.get(DeliveryRow, delivery_id)
            if row is None or row.status != PENDING:
                return
            row.attempts += 1
            row.history = [*row.history, attempt]  # a new list, so the JSON column is saved
            row.status = outcome
            if outcome == PENDING:
                row.next_attempt_at = retry_at
            else:
                row.next_attempt_at = None
                row.finished_at = now()

    def next_due(self) -> datetime | None:
        with self._session() as session:
            value = session.scalar(
                select(DeliveryRow.next_attempt_at)
                .where(DeliveryRow.status == PENDING)
                .order_by(DeliveryRow.next_attempt_at)
                .limit(1)
            )
            return aware(value)

    def for_event(self, key: str) -> list[dict[str, Any]]:
        """The deliveries of one event as `GET /events/{id}` shows them (no body)."""
        with self._session() as session:
            rows = session.scalars(
                select(DeliveryRow).where(DeliveryRow.key == key).order_by(DeliveryRow.created_at)
            ).all()
            return [
                {
                    "id": row.id,
                    "url": row.url,
                    "status": row.status,
                    "attempts": row.attempts,
                    "next_attempt_at": aware(row.next_attempt_at)
                    if row.status == PENDING
                    else None,
                    "finished_at": aware(row.finished_at),
                    "history": list(row.history),
                }
                for row in rows
            ]
