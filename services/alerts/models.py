"""Tables the alerts service owns: alerts and their transitions (the audit trail), the compact
state of each episode, its own copy of the scores it has seen (for replaying an episode when a
late or amended score arrives), the expected trajectories fitted from those scores, and the
appointments it has seen (attendance, for the disengagement rules), and each tenant's clinical policies
(every version kept: an alert names the version it ran under)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from rapport.shared.db.base import Base, Document, UtcDateTime
from rapport.shared.db.delivery import inbox_table, outbox_table


class StoredAlert(Base):
    __tablename__ = "alerts_alerts"
    __table_args__ = (Index("ix_alerts_alerts_episode", "tenant", "client_id", "episode_id", "status"),)

    alert_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str] = mapped_column(String(128))
    episode_id: Mapped[str] = mapped_column(String(128))
    clinician_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    kind: Mapped[str] = mapped_column(String(32))
    instrument: Mapped[str] = mapped_column(String(32))
    subscale: Mapped[str | None] = mapped_column(String(32), nullable=True)
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    version: Mapped[int] = mapped_column(Integer)
    # the tenant's clinical policy version the rules last moved it under (0: none set); null before policies
    policy_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    document: Mapped[dict[str, Any]] = mapped_column(Document)


class StoredTransition(Base):
    __tablename__ = "alerts_transitions"
    __table_args__ = (Index("ix_alerts_transitions_alert", "alert_id", "at"),)

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(64))
    tenant: Mapped[str] = mapped_column(String(64))
    transition: Mapped[str] = mapped_column(String(16))
    by: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)


class EpisodeRecord(Base):
    __tablename__ = "alerts_episodes"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    episode_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    latest_at: Mapped[datetime] = mapped_column(UtcDateTime)
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[dict[str, Any]] = mapped_column(Document)


class SeenScore(Base):
    __tablename__ = "alerts_scores"
    __table_args__ = (Index("ix_alerts_scores_episode", "tenant", "client_id", "episode_id", "administered_at"),)

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    submission_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    episode_id: Mapped[str] = mapped_column(String(128))
    revision: Mapped[int] = mapped_column(Integer)
    administered_at: Mapped[datetime] = mapped_column(UtcDateTime)
    document: Mapped[dict[str, Any]] = mapped_column(Document)


class StoredTrajectoryFit(Base):
    """The latest `rapport trajectories fit` of one instrument for one tenant (a TrajectoryFit document)."""

    __tablename__ = "alerts_trajectory_fits"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    instrument: Mapped[str] = mapped_column(String(32), primary_key=True)
    fitted_at: Mapped[datetime] = mapped_column(UtcDateTime)
    document: Mapped[dict[str, Any]] = mapped_column(Document)


class SeenAppointment(Base):
    """The alerts service's own copy of each appointment's latest state (an Attendance document), in the
    episode it was placed in (the one it named, else the client's latest episode when it arrived; none
    when the client had none yet)."""

    __tablename__ = "alerts_attendance"
    __table_args__ = (Index("ix_alerts_attendance_episode", "tenant", "client_id", "episode_id", "start"),)

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    appointment_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    episode_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    revision: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    start: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    document: Mapped[dict[str, Any]] = mapped_column(Document)


class StoredClinicalPolicy(Base):
    """One version of a tenant's clinical policy (a PolicyValues document), never changed once written: a new
    policy is the next version, and the highest is the one the rules run under."""

    __tablename__ = "alerts_policies"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    signed_off_by: Mapped[str] = mapped_column(String(128))
    signed_off_at: Mapped[datetime] = mapped_column(UtcDateTime)
    document: Mapped[dict[str, Any]] = mapped_column(Document)


inbox = inbox_table("alerts")
outbox = outbox_table("alerts")
