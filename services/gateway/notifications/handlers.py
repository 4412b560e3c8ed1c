"""The notify events (`rapport.<tenant>.notify.<clinician>`, published by the alerts service), turned
into deliveries: one row per matching webhook endpoint and e-mail subscription, written in the
transaction that records the event in the gateway's inbox. A redelivered event is recognised by the
inbox, and a replayed one derives the same delivery ids, so a receiver is sent each notification
once per target (retries aside, which carry the same webhook-id). The sender is woken once the
batch commits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from rapport.services.gateway.notifications.domain import CHANNELS, Channel, NotifyEvent, deliveries_for
from rapport.services.gateway.notifications.repository import queue, targets_of
from rapport.shared.contracts.alert import Notification
from rapport.shared.contracts.envelope import CloudEvent, event_type
from rapport.shared.contracts.tenancy import SUBJECT_TOKEN_PATTERN
from rapport.shared.messaging.consumer import Inbound
from rapport.shared.messaging.retry import PoisonMessage
from rapport.shared.unit_of_work import SessionUnitOfWork

NOTIFY_SENT = event_type("notify", "sent")


def notify_event(message: Inbound) -> NotifyEvent | None:
    """The event, or None for another type on a notify subject (not this consumer's)."""
    try:
        event = CloudEvent.model_validate_json(message.body)
    except ValidationError as error:
        raise PoisonMessage(f"not a CloudEvent ({error.error_count()} problems)") from None
    message.require_tenant(event.tenant)
    if event.type != NOTIFY_SENT:
        return None
    parts = message.subject.split(".")
    clinician = parts[3] if len(parts) == 4 else ""
    if not SUBJECT_TOKEN_PATTERN.fullmatch(clinician):
        raise PoisonMessage("a notify subject names one clinician: rapport.<tenant>.notify.<clinician>")
    try:
        notification = Notification.model_validate(event.data)
    except ValidationError as error:
        raise PoisonMessage(f"not a notification ({error.error_count()} problems)") from None
    return NotifyEvent(event_id=event.id, tenant=message.tenant, clinician=clinician, time=event.time,
                       notification=notification)


@dataclass
class QueueDeliveries:
    public_url: str
    channels: Sequence[Channel] = CHANNELS
    sent: Callable[[], None] = field(default=lambda: None)  # wakes the sender after commit

    async def __call__(self, uow: SessionUnitOfWork, messages: Sequence[Inbound]) -> None:
        events = [e for e in map(notify_event, messages) if e is not None]
        if not events:
            return
        targets = await targets_of(uow.session, {e.tenant for e in events}, self.channels)
        deliveries = [d for e in events for d in deliveries_for(e, targets, self.public_url)]
        await queue(uow.session, deliveries, uow.now)
        if deliveries:
            uow.after_commit(self.sent)

