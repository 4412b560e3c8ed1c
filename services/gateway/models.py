"""Tables the gateway owns: the messages it published for HTTP requests, its read models (ingest's
answers; the alerts, their transitions and the scores, as the alert and record API shows them), and
the inbox and outbox every consuming service has (the outbox stays empty: the gateway publishes what
it is sent while the caller waits, and a failed publish is the caller's 503, not a row to relay)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, Index, Integer, String, Text
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


class PublishedMessage(Base):
    """A message the gateway published for an HTTP request: recorded before the publish, so a poll
    of its id tells pending (202) from never sent (404), and a reused Idempotency-Key is recognised
    by the digest of the body it was first sent with. Keyed like the answers (`inbox_key` of tenant
    and message id); `form` is the endpoint's: `native`, or the FHIR resource type posted."""

    __tablename__ = "gateway_messages"

    message_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    body_digest: Mapped[str] = mapped_column(String(64))
    form: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_gateway_messages_received_at", "received_at"),)


class AlertView(Base):
    """An alert as it stands after its latest transition (the highest version seen wins)."""

    __tablename__ = "gateway_alerts"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    urgency: Mapped[int] = mapped_column(Integer, doc="0 = most urgent: critical first, then by severity")
    status: Mapped[str] = mapped_column(String(16))
    client_id: Mapped[str] = mapped_column(String(128))
    episode_id: Mapped[str] = mapped_column(String(128))
    clinician_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    headline: Mapped[str] = mapped_column(Text)
    evidence_words: Mapped[str] = mapped_column(Text)
    alert: Mapped[dict[str, Any]] = mapped_column(Document)

    __table_args__ = (
        Index("ix_gateway_alerts_worklist", "tenant", "status", "urgency", "opened_at"),
        Index("ix_gateway_alerts_clinician", "tenant", "clinician_id"),
        Index("ix_gateway_alerts_episode", "tenant", "client_id", "episode_id"),
    )


class AlertTransitionView(Base):
    """One transition of an alert: who or what moved it, when and why."""

    __tablename__ = "gateway_alert_transitions"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    transition: Mapped[str] = mapped_column(String(16), primary_key=True)
    by: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))


class ScoreView(Base):
    """One computed score as the record shows it (its latest revision): the totals, the change figures
    and the parameters used; never the item responses."""

    __tablename__ = "gateway_scores"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    submission_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)
    client_id: Mapped[str] = mapped_column(String(128))
    episode_id: Mapped[str] = mapped_column(String(128))
    clinician_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    instrument: Mapped[str] = mapped_column(String(32))
    administered_at: Mapped[datetime] = mapped_column(UtcDateTime)
    session_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    total: Mapped[float] = mapped_column(Float)
    score: Mapped[dict[str, Any]] = mapped_column(Document)

    __table_args__ = (Index("ix_gateway_scores_episode", "tenant", "client_id", "episode_id", "administered_at"),)


class AttendanceView(Base):
    """An episode's attendance as the alerts service last summarised it (`attendance.recorded`): the
    sessions attended, missed and cancelled, the gap since the last attended one, how it ended. The
    newest summary (by its `as_of`) wins; it holds ids, counts and times, never free text."""

    __tablename__ = "gateway_attendance"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    episode_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    as_of: Mapped[datetime] = mapped_column(UtcDateTime)
    summary: Mapped[dict[str, Any]] = mapped_column(Document)
    # the clinician the latest appointment naming one named: who may see an episode with no score yet
    clinician_id: Mapped[str | None] = mapped_column(String(128), nullable=True)


inbox = inbox_table("gateway")
outbox = outbox_table("gateway")
