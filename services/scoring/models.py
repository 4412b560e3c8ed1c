"""Tables the scoring service owns: the longitudinal record of scores, and a compact summary per
episode and instrument so scoring a submission never reads the whole history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from rapport.shared.db.base import Base, Document, UtcDateTime
from rapport.shared.db.delivery import inbox_table, outbox_table


class StoredScore(Base):
    __tablename__ = "scoring_scores"
    __table_args__ = (
        Index("ix_scoring_scores_series", "tenant", "client_id", "episode_id", "instrument", "administered_at"),
    )

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    submission_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)
    client_id: Mapped[str] = mapped_column(String(128))
    episode_id: Mapped[str] = mapped_column(String(128))
    instrument: Mapped[str] = mapped_column(String(32))
    administered_at: Mapped[datetime] = mapped_column(UtcDateTime)
    total: Mapped[float] = mapped_column(Float)
    document: Mapped[dict[str, Any]] = mapped_column(Document)


class Series(Base):
    """Baseline and latest score of one instrument in one episode."""

    __tablename__ = "scoring_series"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    episode_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    instrument: Mapped[str] = mapped_column(String(32), primary_key=True)
    baseline_total: Mapped[float] = mapped_column(Float)
    baseline_at: Mapped[datetime] = mapped_column(UtcDateTime)
    latest_submission: Mapped[str] = mapped_column(String(128))
    latest_total: Mapped[float] = mapped_column(Float)
    latest_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sessions: Mapped[int] = mapped_column(Integer)


class AutoEpisode(Base):
    """An episode the gap rule made for a client's submissions that named none (services/scoring/episodes.py)."""

    __tablename__ = "scoring_auto_episodes"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    episode_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    first_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_at: Mapped[datetime] = mapped_column(UtcDateTime)


inbox = inbox_table("scoring")
outbox = outbox_table("scoring")
