"""Tables the gateway owns: its read model of ingest's answers, and the inbox and outbox every
consuming service has (the outbox stays empty: the gateway publishes what it is sent while the
caller waits, and a failed publish is the caller's 503, not a row to relay)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from rapport.shared.db.base import Base, Document, UtcDateTime
from rapport.shared.db.delivery import inbox_table, outbox_table


class StoredAnswer(Base):
    """One answer (accepted or rejected) to one part of an inbound message, as the HTTP caller is
    told it: ids, codes and the problems' words, never the submitted values. Keyed by a digest of
    the tenant and the inbound message id (`inbox_key`), so one tenant's ids never meet another's."""

    __tablename__ = "gateway_answers"

    message_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True)
    parts: Mapped[int] = mapped_column(Integer)
    answered_at: Mapped[datetime] = mapped_column(UtcDateTime)
    answer: Mapped[dict[str, Any]] = mapped_column(Document)

    __table_args__ = (Index("ix_gateway_answers_answered_at", "answered_at"),)


inbox = inbox_table("gateway")
outbox = outbox_table("gateway")
