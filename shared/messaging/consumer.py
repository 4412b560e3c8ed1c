"""How every service consumes: a batch of messages, one transaction, then publish, then ack.

For each batch the consumer
1. records the message ids in the service's inbox, in the transaction that does the work, so a
   redelivered message does nothing twice (idempotent consumer);
2. lets the service's work function turn the fresh messages into stored rows and outgoing events;
3. writes those events to the outbox in the same transaction and commits;
4. publishes them (fast path); their outbox rows are deleted by the next batch's transaction (or
   the relay's), what fails to publish stays in the outbox for the relay, so a crash between
   commit and publish loses nothing;
5. acks the messages.

A failure of the whole batch is retried message by message, so one poison message cannot hold the
others back. Poison goes to the dead-letter subject on first sight; transient faults are nak'ed
with backoff and dead-lettered once the delivery count reaches max_deliver.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.aio.msg import Msg
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db.delivery import Outgoing, PublishedRows, add_to_outbox, forget_published, remember_new
from shared.messaging.publish import EventPublisher
from shared.messaging.retry import DeadLetter, Retry, plan_retry
from shared.messaging.subjects import dead_letter, tenant_of
from shared.metrics import batch_seconds, batch_size, duplicates_ignored, messages_failed, messages_received
from shared.settings import Settings

log = logging.getLogger("rapport.consumer")

EVENT_NAMESPACE = uuid.UUID("3f1d6a52-8f0e-4c4e-9a57-2f4b8a1c9d10")


@dataclass(frozen=True)
class Inbound:
    """One message as a service sees it: where it came from, for whom, and how often it came."""

    message_id: str
    subject: str
    tenant: str
    body: bytes
    deliveries: int
    raw: Msg | None = None

    @classmethod
    def from_nats(cls, msg: Msg) -> Inbound:
        headers = msg.headers or {}
        meta = msg.metadata
        # Nats-Msg-Id when the sender gave one; otherwise the stream sequence, which is stable
        # across redeliveries of the same message.
        message_id = headers.get("Nats-Msg-Id") or f"seq:{meta.stream}:{meta.sequence.stream}"
        return cls(
            message_id=message_id,
            subject=msg.subject,
            tenant=tenant_of(msg.subject) or "",
            body=msg.data,
            deliveries=meta.num_delivered,
            raw=msg,
        )

    def event_id(self, service: str, n: int = 0) -> str:
        """A deterministic id for the n-th event this message causes in `service`."""
        return str(uuid.uuid5(EVENT_NAMESPACE, f"{service}:{self.message_id}:{n}"))


Work = Callable[[AsyncSession, Sequence[Inbound], datetime], Awaitable[list[Outgoing]]]


def utcnow() -> datetime:
    return datetime.now(UTC)


class BatchConsumer:
    def __init__(
        self,
        *,
        service: str,
        subject_pattern: str,
        sessions: async_sessionmaker[AsyncSession],
        inbox: Table,
        outbox: Table,
        work: Work,
        publisher: EventPublisher,
        published: PublishedRows,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.service = service
        self.subject_pattern = subject_pattern
        self._sessions = sessions
        self._inbox = inbox
        self._outbox = outbox
        self._work = work
        self._publisher = publisher
        self._published = published
        self._settings = settings
        self._clock = clock

    async def consume(self, raw: Sequence[Msg]) -> None:
        started = time.perf_counter()
        messages = [Inbound.from_nats(m) for m in raw]
        messages_received.labels(self.service, self.subject_pattern).inc(len(messages))
        batch_size.labels(self.service).observe(len(messages))
        await self.handle(messages)
        batch_seconds.labels(self.service).observe(time.perf_counter() - started)

    async def handle(self, messages: Sequence[Inbound]) -> None:
        try:
            published = await self._transaction(messages)
        except Exception as error:
            if len(messages) == 1:
                await self._fail(messages[0], error)
                return
            log.warning("batch of %d failed; retrying one by one", len(messages), exc_info=True)
            for message in messages:
                await self.handle([message])
            return
        await self._publish_committed(published)
        for message in messages:
            if message.raw is not None:
                await message.raw.ack()

    async def _transaction(self, messages: Sequence[Inbound]) -> list[Outgoing]:
        now = self._clock()
        earlier = self._published.take()
        try:
            async with self._sessions() as session, session.begin():
                fresh_ids = await remember_new(session, self._inbox, [m.message_id for m in messages], now)
                fresh = [m for m in messages if m.message_id in fresh_ids]
                if skipped := len(messages) - len(fresh):
                    duplicates_ignored.labels(self.service).inc(skipped)
                events = await self._work(session, fresh, now) if fresh else []
                await add_to_outbox(session, self._outbox, events, now)
                await forget_published(session, self._outbox, earlier)
        except BaseException:
            self._published.give_back(earlier)
            raise
        return events

    async def _publish_committed(self, events: Sequence[Outgoing]) -> None:
        if not events:
            return
        published = await self._publisher.publish_all(events)
        if len(published) < len(events):
            log.warning("%d events left in the outbox for the relay", len(events) - len(published))
        self._published.add(published)

    async def _fail(self, message: Inbound, error: Exception) -> None:
        plan = plan_retry(
            error, message.deliveries, self._settings.max_deliver, self._settings.retry_backoff_seconds
        )
        if isinstance(plan, Retry):
            messages_failed.labels(self.service, self.subject_pattern, "retried").inc()
            log.warning(
                "message failed (%s); retrying in %.1fs", type(error).__name__, plan.delay_seconds,
                extra={"message_id": message.message_id, "subject": message.subject,
                       "deliveries": message.deliveries},
            )
            if message.raw is not None:
                await message.raw.nak(delay=plan.delay_seconds)
            return
        await self._dead_letter(message, plan, error)

    async def _dead_letter(self, message: Inbound, plan: DeadLetter, error: BaseException) -> None:
        messages_failed.labels(self.service, self.subject_pattern, "dead_lettered").inc()
        log.error("message dead-lettered: %s", plan.reason,
                  extra={"message_id": message.message_id, "subject": message.subject})
        letter = Outgoing(
            event_id=f"dlq:{self.service}:{message.message_id}",
            subject=dead_letter(message.tenant or "unknown", self.service),
            body=message.body,
        )
        try:
            await self._publisher.publish(
                letter,
                headers={
                    "Rapport-Error": plan.reason,
                    "Rapport-Error-Detail": _safe_detail(error),
                    "Rapport-Original-Subject": message.subject,
                    "Rapport-Original-Message-Id": message.message_id,
                    "Rapport-Deliveries": str(message.deliveries),
                    "content-type": "application/octet-stream",
                },
            )
        except Exception:
            log.exception("dead-letter publish failed; leaving it to redelivery",
                          extra={"message_id": message.message_id})
            if message.raw is not None:
                await message.raw.nak(delay=self._settings.retry_backoff_seconds[-1])
            return
        if message.raw is not None:
            await message.raw.term()


def _safe_detail(error: BaseException) -> str:
    # Exception text from our own code names fields and codes, never payload values; driver errors
    # can quote SQL parameters, so only their class is kept.
    if type(error).__module__.startswith(("shared", "services")):
        return str(error)[:500]
    return type(error).__name__
