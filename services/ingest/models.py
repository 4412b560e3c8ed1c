"""Tables the ingest service owns."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from rapport.shared.db.base import Base, Document, UtcDateTime
from rapport.shared.db.delivery import inbox_table, outbox_table


class StoredSubmission(Base):
    """The latest accepted revision of each submission, in canonical form."""

    __tablename__ = "ingest_submissions"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    submission_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    instrument: Mapped[str] = mapped_column(String(32))
    accepted_at: Mapped[datetime] = mapped_column(UtcDateTime)
    document: Mapped[dict[str, Any]] = mapped_column(Document)


class StoredAttendance(Base):
    """The latest state of each appointment (an Attendance document), and what orders its states."""

    __tablename__ = "ingest_attendance"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    appointment_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    version: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    accepted_at: Mapped[datetime] = mapped_column(UtcDateTime)
    document: Mapped[dict[str, Any]] = mapped_column(Document)


inbox = inbox_table("ingest")
outbox = outbox_table("ingest")
