"""Notification delivery plugged into the gateway (app.py calls `notification_delivery` once): the
consumer of the notify events, the sender and an hourly pruning of finished deliveries as the
runtime's background tasks, and the router."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter

from rapport.services.gateway.http import Gate
from rapport.services.gateway.notifications.api import Audit, Authenticate, notifications_router
from rapport.services.gateway.notifications.domain import Channel
from rapport.services.gateway.notifications.handlers import QueueDeliveries
from rapport.services.gateway.notifications.repository import forget_finished
from rapport.services.gateway.notifications.sealing import key_for, use_key
from rapport.services.gateway.notifications.sender import NotificationSender
from rapport.shared.messaging import subjects
from rapport.shared.periodic import Periodic
from rapport.shared.service import ServiceRuntime
from rapport.shared.settings import Settings
from rapport.shared.unit_of_work import SessionUnitOfWork

NOTIFICATIONS = f"{subjects.PREFIX}.*.notify.>"


@dataclass(frozen=True)
class NotificationDelivery:
    router: APIRouter
    sender: NotificationSender


def notification_delivery(runtime: ServiceRuntime, settings: Settings, gate: Gate, *,
                          authenticate: Authenticate | None = None, audit: Audit | None = None) -> NotificationDelivery:
    # webhook secrets are sealed at rest with a key outside the database (sealing.py)
    use_key(key_for(settings))
    sender = NotificationSender(runtime.sessions, settings, clock=runtime.clock)
    # without an SMTP relay no e-mail delivery is queued (and no subscription can be made)
    channels: tuple[Channel, ...] = ("webhook", "email") if sender.email_configured else ("webhook",)
    runtime.subscribe(
        NOTIFICATIONS, "gateway-notifications-v1",
        QueueDeliveries(settings.resolved_public_url(), channels, sent=sender.wake), unit_of_work=SessionUnitOfWork,
        description="the alerts service's notifications, each queued for delivery to the matching webhook "
                    "endpoints and e-mail subscriptions",
    )
    runtime.add_background(sender)

    async def prune() -> None:
        async with runtime.sessions() as session, session.begin():
            await forget_finished(session, runtime.clock() - settings.inbox_retention)

    runtime.add_background(Periodic("gateway-delivery-pruning", 3600, prune))
    router = notifications_router(gate, runtime.sessions, clock=runtime.clock,
                                  email_configured=sender.email_configured, egress=sender.egress,
                                  authenticate=authenticate, audit=audit)
    return NotificationDelivery(router=router, sender=sender)
