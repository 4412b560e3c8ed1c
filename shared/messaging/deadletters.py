"""Reading and redriving dead letters (the RAPPORT_DLQ stream), for `rapport deadletter`.

A dead letter is the original message, byte for byte, on `rapport.<tenant>.deadletter.<service>`
with headers that say why (consumer.py `_dead_letter`). Listing reads headers only, never bodies.
A redrive publishes the original body to its original subject again, keeping the original message
id in the `Rapport-Message-Id` header so the consumer's inbox still recognises a message that was
handled after all; once the broker has taken it, the dead letter is deleted from the stream, so a
redrive run twice does nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from rapport.shared.contracts.envelope import derived_event_id
from rapport.shared.messaging.consumer import ORIGINAL_ID_HEADER
from rapport.shared.messaging.subjects import DEAD_LETTERS, DEADLETTER_STREAM, PREFIX, UNROUTABLE, stream_of, tenant_of


@dataclass(frozen=True)
class DeadLetterRecord:
    sequence: int
    at: datetime
    tenant: str
    service: str
    reason: str
    detail: str
    original_subject: str
    original_message_id: str
    deliveries: int
    size: int

    @property
    def kind(self) -> str:
        """poison or defect (the first word of the reason)."""
        return self.reason.split(":", 1)[0]


@dataclass(frozen=True)
class Filters:
    service: str | None = None
    tenant: str | None = None
    reason: str | None = None  # "poison", "defect", or any text the reason contains
    since: datetime | None = None
    until: datetime | None = None

    def subject(self) -> str:
        tenant = self.tenant or "*"
        return f"{PREFIX}.{tenant}.deadletter.{self.service}" if self.service else f"{PREFIX}.{tenant}.deadletter.>"

    def admit(self, record: DeadLetterRecord) -> bool:
        if self.reason and self.reason != record.kind and self.reason not in record.reason:
            return False
        return self.until is None or record.at <= self.until


def _record(subject: str, headers: dict[str, str], sequence: int, at: datetime, size: int) -> DeadLetterRecord:
    parts = subject.split(".")
    tenant = tenant_of(subject) or (UNROUTABLE if len(parts) > 1 and parts[1] == UNROUTABLE else "?")
    return DeadLetterRecord(
        sequence=sequence, at=at, tenant=tenant, service=headers.get("Rapport-Service", parts[-1]),
        reason=headers.get("Rapport-Error", ""), detail=headers.get("Rapport-Error-Detail", ""),
        original_subject=headers.get("Rapport-Original-Subject", ""),
        original_message_id=headers.get("Rapport-Original-Message-Id", ""),
        deliveries=int(headers.get("Rapport-Deliveries", "0") or 0), size=size,
    )


async def list_dead_letters(js: JetStreamContext, filters: Filters = Filters(), limit: int = 1000,
                            wait_seconds: float = 5.0) -> list[DeadLetterRecord]:
    """The dead letters matching the filters, oldest first, headers only."""
    try:
        info = await js.stream_info(DEADLETTER_STREAM)
    except NotFoundError:
        return []
    if not info.state.messages:
        return []
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE, headers_only=True, inactive_threshold=30,
        deliver_policy=DeliverPolicy.BY_START_TIME if filters.since else DeliverPolicy.ALL,
        opt_start_time=filters.since,
    )
    subscription = await js.pull_subscribe(filters.subject(), stream=DEADLETTER_STREAM, config=config)
    found: list[DeadLetterRecord] = []
    try:
        while len(found) < limit:
            try:
                batch = await subscription.fetch(min(256, limit - len(found)), timeout=wait_seconds)
            except TimeoutError:
                break
            for msg in batch:
                meta = msg.metadata
                size = int((msg.headers or {}).get("Nats-Msg-Size", "0") or 0)
                record = _record(msg.subject, msg.headers or {}, meta.sequence.stream, meta.timestamp, size)
                if filters.admit(record):
                    found.append(record)
            if batch and batch[-1].metadata.num_pending == 0:
                break
    finally:
        await subscription.unsubscribe()
    return found[:limit]


async def get_dead_letter(js: JetStreamContext, sequence: int) -> tuple[DeadLetterRecord, bytes] | None:
    try:
        raw = await js.get_msg(DEADLETTER_STREAM, sequence)
    except NotFoundError:
        return None
    if not raw.subject or not raw.subject.startswith(PREFIX) or ".deadletter." not in raw.subject:
        return None
    body = raw.data or b""
    return _record(raw.subject, raw.headers or {}, sequence, raw.time or datetime.min, len(body)), body


@dataclass(frozen=True)
class Redriven:
    sequence: int
    subject: str
    stream_sequence: int


async def redrive(js: JetStreamContext, sequences: Sequence[int], wait_seconds: float = 10.0) -> list[Redriven]:
    """Publish each dead letter's original message again, then delete the dead letter."""
    done = []
    for sequence in sequences:
        found = await get_dead_letter(js, sequence)
        if found is None:
            continue
        record, body = found
        if not record.original_subject.startswith(f"{PREFIX}.") or record.tenant == UNROUTABLE:
            continue  # nowhere to send it: it stays listed
        ack = await js.publish(
            record.original_subject, body, timeout=wait_seconds, stream=stream_of(record.original_subject),
            headers={
                "Nats-Msg-Id": derived_event_id("redrive", record.tenant, sequence, record.original_message_id),
                ORIGINAL_ID_HEADER: record.original_message_id,
                "Rapport-Redriven-From": str(sequence),
            },
        )
        await js.delete_msg(DEADLETTER_STREAM, sequence)
        done.append(Redriven(sequence=sequence, subject=record.original_subject, stream_sequence=ack.seq))
    return done


__all__ = ["DEAD_LETTERS", "DeadLetterRecord", "Filters", "Redriven", "get_dead_letter", "list_dead_letters",
           "redrive"]
