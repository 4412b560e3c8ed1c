"""The gateway's tables for notification delivery (migration 0007).

- `gateway_webhook_endpoints`, `gateway_email_subscriptions`: the targets, per tenant, each for one
  clinician or (`clinician_id` NULL) for every notification of the tenant. A webhook's secret is
  needed to sign, so it is stored, sealed with a key kept outside the database (sealing.py,
  `SealedSecret`: the column holds `sealed1:…`, Python reads `whsec_…`); the API shows it once.
  After a rotation (migration 0014) the replaced secret is kept in `previous_secret` until
  `previous_secret_until`, signing beside the new one.
- `gateway_deliveries`: one row per notification per target, written with the inbox row of the
  notify event (an outbox of deliveries). Its id is the `webhook-id`, derived from the event and the
  target; the payload is stored once, so every retry sends the same bytes.
- `gateway_delivery_attempts`: every try, kept: when, the status code or the kind of failure, what
  it came to, when the next is due.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from rapport.services.gateway.notifications.sealing import SealedSecret
from rapport.shared.db.base import Base, UtcDateTime


class WebhookEndpoint(Base):
    __tablename__ = "gateway_webhook_endpoints"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    clinician_id: Mapped[str | None] = mapped_column(String(128))
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(200))
    secret: Mapped[str] = mapped_column(SealedSecret())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(255))
    previous_secret: Mapped[str | None] = mapped_column(SealedSecret(), default=None)
    previous_secret_until: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)

    __table_args__ = (Index("ix_gateway_webhook_endpoints_tenant", "tenant", "clinician_id"),)


class EmailSubscription(Base):
    __tablename__ = "gateway_email_subscriptions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    clinician_id: Mapped[str | None] = mapped_column(String(128))
    address: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(255))

    __table_args__ = (Index("ix_gateway_email_subscriptions_tenant", "tenant", "clinician_id"),)


class Delivery(Base):
    __tablename__ = "gateway_deliveries"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    target_id: Mapped[str] = mapped_column(String(36))
    event_id: Mapped[str] = mapped_column(String(64))
    alert_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # when the next try is due (pending), or until when a sender holds it (its lease)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("ix_gateway_deliveries_due", "status", "next_attempt_at"),
        Index("ix_gateway_deliveries_target_id", "target_id"),
    )


class DeliveryAttempt(Base):
    __tablename__ = "gateway_delivery_attempts"

    delivery_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    target_id: Mapped[str] = mapped_column(String(36))
    attempted_at: Mapped[datetime] = mapped_column(UtcDateTime)
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(40))
    outcome: Mapped[str] = mapped_column(String(16))
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_gateway_delivery_attempts_target_id", "target_id", "attempted_at"),)
