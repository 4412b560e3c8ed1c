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


class StoredQuestionnaireMapping(Base):
    """A tenant's own Questionnaire as ingest reads it (`rapport questionnaires import`): the instrument, its
    linkId -> item map and answer weights, in `document`. Keyed by a digest of the canonical and version, so
    any canonical fits the key; the canonical itself is kept beside it for listing."""

    __tablename__ = "ingest_questionnaire_mappings"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    questionnaire_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    canonical: Mapped[str] = mapped_column(String(1024))
    version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    instrument: Mapped[str] = mapped_column(String(32))
    imported_at: Mapped[datetime] = mapped_column(UtcDateTime)
    document: Mapped[dict[str, Any]] = mapped_column(Document)
