"""The one way to publish an event: CloudEvent JSON, `Nats-Msg-Id` = event id, to the stream,
waiting for the broker's acknowledgement."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from faststream.nats import NatsBroker
from pydantic import BaseModel

from rapport.shared.contracts.envelope import make_event
from rapport.shared.db.delivery import Outgoing
from rapport.shared.messaging.subjects import stream_of
from rapport.shared.metrics import messages_published

CLOUDEVENTS_JSON = "application/cloudevents+json"


def cloud_event(
    *, entity: str, verb: str, service: str, tenant: str, subject: str, about: str | None, data: BaseModel,
    event_id: str | None = None,
) -> Outgoing:
    """Build and serialise one outbound event, once, so the outbox stores exactly what is sent."""
    event = make_event(
        entity=entity, verb=verb, source=f"rapport/{service}", tenant=tenant, data=data, subject=about,
        event_id=event_id,
    )
    return Outgoing(event_id=event.id, subject=subject, body=event.model_dump_json().encode())


class EventPublisher:
    def __init__(self, broker: NatsBroker, *, service: str, timeout: float) -> None:
        self._broker = broker
        self._service = service
        self._timeout = timeout

    async def publish(self, event: Outgoing, *, headers: dict[str, str] | None = None) -> None:
        await self._broker.publish(
            event.body,
            event.subject,
            headers={"Nats-Msg-Id": event.event_id, "content-type": CLOUDEVENTS_JSON, **(headers or {})},
            stream=stream_of(event.subject),
            timeout=self._timeout,
        )
        messages_published.labels(self._service, _event_kind(event.subject)).inc()

    async def publish_all(self, events: Sequence[Outgoing]) -> list[str]:
        """Publish concurrently; return the ids the broker acknowledged (the rest stay in the outbox)."""
        results = await asyncio.gather(*(self.publish(e) for e in events), return_exceptions=True)
        return [e.event_id for e, r in zip(events, results, strict=True) if not isinstance(r, BaseException)]


def _event_kind(subject: str) -> str:
    parts = subject.split(".")
    return ".".join(parts[2:4]) if len(parts) >= 4 else "unknown"
