"""CloudEvents 1.0 structured-mode envelope for every outbound event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from rapport.shared.contracts.tenancy import TenantId


class CloudEvent(BaseModel):
    """The envelope. `id` is also sent as the `Nats-Msg-Id` header, so a republish is deduplicated."""

    model_config = ConfigDict(frozen=True)

    specversion: str = "1.0"
    id: str
    type: str = Field(description="rapport.<entity>.<verb>.v1")
    source: str = Field(description="the service that emitted it, e.g. rapport/scoring")
    time: AwareDatetime
    subject: str | None = Field(default=None, description="what the event is about, e.g. a submission id")
    datacontenttype: str = "application/json"
    tenant: TenantId
    data: dict[str, Any]


def event_type(entity: str, verb: str, version: int = 1) -> str:
    return f"rapport.{entity}.{verb}.v{version}"


def new_event_id() -> str:
    return str(uuid.uuid4())


EVENT_NAMESPACE = uuid.UUID("3f1d6a52-8f0e-4c4e-9a57-2f4b8a1c9d10")


def derived_event_id(kind: str, tenant: str, *parts: str | int) -> str:
    """The id of an event that a redelivery, a replay or another replica must derive again.

    A UUID (36 characters whatever the inputs, so it fits every id column), named by the kind of
    event, the tenant and what caused it, so two tenants never derive one id: the stream's
    duplicate window and the consumers' inboxes cannot be made to drop one tenant's event by
    another's. The readable cause travels in the event (its `subject` and data), not in the id.
    """
    name = "\x1f".join([kind, tenant, *map(str, parts)])
    return str(uuid.uuid5(EVENT_NAMESPACE, name))


def make_event(
    *,
    entity: str,
    verb: str,
    source: str,
    tenant: str,
    data: BaseModel,
    subject: str | None,
    now: datetime | None = None,
    event_id: str | None = None,
) -> CloudEvent:
    return CloudEvent(
        id=event_id or new_event_id(),
        type=event_type(entity, verb),
        source=source,
        time=now or datetime.now(UTC),
        subject=subject,
        tenant=tenant,
        data=data.model_dump(mode="json"),
    )
