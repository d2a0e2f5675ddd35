"""The events table and the plain values the event store takes and returns.

Rows hold stored keys (skyhigh.domain.tenancy.event_key); `to_record` turns a row into the
client's view (`public_event_id`), so nothing outside the store sees keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from skyhigh.domain.events import EventError, EventRecord, EventStatus
from skyhigh.domain.tenancy import STATIC_OWNER, public_event_id
from skyhigh.store.db import Base, aware, now

KEY_LENGTH = 192  # >= skyhigh.domain.tenancy.KEY_MAX_LENGTH (migration 0003)


class EventRow(Base):
    __tablename__ = "events"

    # Surrogate key orders events by arrival for cursors and queue positions.
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The stored key (owner namespace + the client's id), not the public event id.
    key: Mapped[str] = mapped_column("event_id", String(KEY_LENGTH), unique=True)
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
    # Leases (see EventStore.claim): who works on a processing event, and until when; once
    # the event is finished, lease_owner still names the worker that ran it last.
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
    key: str
    event_type: str
    body_sha256: str
    payload: dict[str, Any]
    request_id: str | None = None
    owner: str = STATIC_OWNER


# What a processing event returns to when its worker lets go of it.
UNLEASED: dict[str, Any] = {
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
    key: str
    event_type: str
    payload: dict[str, Any]
    attempts: int
    request_id: str | None
    owner: str = STATIC_OWNER


@dataclass(frozen=True)
class EventPage:
    items: list[EventRecord]
    next_cursor: str | None


def finish_row(
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
    # lease_owner stays: which worker ran the event last (its lease ends with the status).
    row.lease_expires_at = None


def to_record(session: Session, row: EventRow, *, with_position: bool = True) -> EventRecord:
    position = None
    if with_position and row.status == EventStatus.QUEUED:
        # The owner's own events only: other tenants' queues are none of its business (and
        # the fair queue serves owners in turn, so theirs say little about the wait).
        ahead = session.scalar(
            select(func.count()).where(
                EventRow.status == EventStatus.QUEUED,
                EventRow.owner == row.owner,
                EventRow.seq < row.seq,
            )
        )
        position = int(ahead or 0)
    error = None
    if row.error_code is not None:
        error = EventError(code=row.error_code, message=row.error_message or "")
    return EventRecord(
        event_id=public_event_id(row.key),
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
