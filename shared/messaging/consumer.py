"""How every service consumes: a batch of messages, one transaction, then publish, then ack.

For each batch the consumer
1. records the messages in the service's inbox (keyed by tenant and message id), in the
   transaction that does the work, so a redelivered message does nothing twice;
2. opens the batch's unit of work (shared/unit_of_work.py) and lets the service's handler turn the
   fresh messages into stored rows and outgoing events through it;
3. writes those events to the outbox in the same transaction, commits, and runs what the handler
   asked to happen after commit (metrics);
4. publishes them (fast path); their outbox rows are deleted by the next batch's transaction (or
   the relay's), what fails to publish stays in the outbox for the relay, so a crash between
   commit and publish loses nothing;
5. acks the messages.

What goes wrong is answered by its kind (retry.py). A transient fault pauses consumption: the batch
is kept (its messages marked in progress) and retried with capped backoff until the fault passes,
for minutes or hours, and never dead-lettered; readiness says so meanwhile. Any other failure of a
batch is retried message by message, so one bad message cannot hold the others back: poison goes
to the dead-letter stream on first sight, a defect after a few deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from nats.aio.msg import Msg
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.shared.contracts.envelope import derived_event_id
from rapport.shared.db.delivery import Outgoing, PublishedRows, add_to_outbox, forget_published, inbox_key, remember_new
from rapport.shared.messaging.publish import EventPublisher
from rapport.shared.messaging.retry import DeadLetter, PoisonMessage, Retry, backoff_delay, classify, plan_retry
from rapport.shared.messaging.subjects import UNROUTABLE, dead_letter, tenant_of
from rapport.shared.metrics import (
    batch_seconds,
    batch_size,
    consumer_paused,
    duplicates_ignored,
    faults,
    messages_failed,
    messages_received,
)
from rapport.shared.settings import Settings
from rapport.shared.unit_of_work import UnitOfWork

log = logging.getLogger("rapport.consumer")

# Room left for the headers beside an event's body under the broker's max_payload.
HEADER_ROOM = 4096
# A redrive (rapport deadletter redrive) republishes with a new Nats-Msg-Id and keeps the message's
# original id here, so the consumers' inboxes still recognise it.
ORIGINAL_ID_HEADER = "Rapport-Message-Id"


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
        # The sender's id when it gave one; otherwise the stream position and time, stable across
        # redeliveries and never reused, even by a stream deleted and created again.
        message_id = (headers.get(ORIGINAL_ID_HEADER) or headers.get("Nats-Msg-Id")
                      or f"seq:{meta.stream}:{meta.sequence.stream}:{meta.timestamp.timestamp():.6f}")
        return cls(
            message_id=message_id,
            subject=msg.subject,
            tenant=tenant_of(msg.subject) or "",
            body=msg.data,
            deliveries=meta.num_delivered,
            raw=msg,
        )

    @property
    def inbox_key(self) -> str:
        return inbox_key(self.tenant, self.message_id)

    def require_tenant(self, *named: str) -> None:
        """An event between services names its tenant; it must be the subject's (DESIGN: tenancy)."""
        if not self.tenant or any(tenant != self.tenant for tenant in named):
            raise PoisonMessage("tenant_mismatch: the event names another tenant than the subject it arrived on")

    def event_id(self, kind: str, n: int = 0) -> str:
        """A deterministic id for the n-th event of this kind the message causes."""
        return derived_event_id(kind, self.tenant, self.message_id, n)


U = TypeVar("U", bound=UnitOfWork)
# A service's handler: the fresh messages of a batch, worked on through the batch's unit of work.
Handler = Callable[[U, Sequence[Inbound]], Awaitable[None]]
# Opens a service's unit of work on the batch's session at the batch's time.
UnitOfWorkFactory = Callable[[AsyncSession, datetime], U]


def utcnow() -> datetime:
    return datetime.now(UTC)


class EventTooLarge(Exception):
    """An event the broker would refuse: a defect of the service that built it (never stored)."""


@dataclass(frozen=True)
class Pause:
    """Consumption held back by a transient fault, since when (monotonic) and of which kind."""

    fault: str
    since: float


class BatchConsumer(Generic[U]):
    # the fast path's head start before the relay may publish the same outbox rows
    RELAY_AFTER = timedelta(seconds=5)

    def __init__(
        self,
        *,
        service: str,
        subject_pattern: str,
        sessions: async_sessionmaker[AsyncSession],
        inbox: Table,
        outbox: Table,
        handler: Handler[U],
        unit_of_work: UnitOfWorkFactory[U],
        publisher: EventPublisher,
        published: PublishedRows,
        settings: Settings,
        max_payload: Callable[[], int],
        clock: Callable[[], datetime] = utcnow,
        passes_over: Callable[[Inbound], bool] | None = None,
    ) -> None:
        """`passes_over`: messages the handler would do nothing with, acked without a transaction
        (and without an inbox row: there is nothing to do twice)."""
        self.service = service
        self.subject_pattern = subject_pattern
        self._sessions = sessions
        self._inbox = inbox
        self._outbox = outbox
        self._handler = handler
        self._unit_of_work = unit_of_work
        self._publisher = publisher
        self._published = published
        self._settings = settings
        self._max_payload = max_payload
        self._clock = clock
        self._passes_over = passes_over
        self._stop = asyncio.Event()
        self.paused: Pause | None = None
        self.last_batch_at = time.monotonic()

    def stop(self) -> None:
        """Shutdown: a paused batch hands its messages back to the broker instead of waiting on."""
        self._stop.set()

    async def consume(self, raw: Sequence[Msg]) -> None:
        started = time.perf_counter()
        messages = [Inbound.from_nats(m) for m in raw]
        messages_received.labels(self.service, self.subject_pattern).inc(len(messages))
        batch_size.labels(self.service).observe(len(messages))
        passed: list[Inbound] = []
        if self._passes_over is not None:
            worked: list[Inbound] = []
            for message in messages:
                (passed if self._passes_over(message) else worked).append(message)
            messages = worked
        if messages:
            await self.handle(messages)
        if passed:
            await self._ack(passed)
        batch_seconds.labels(self.service).observe(time.perf_counter() - started)

    async def handle(self, messages: Sequence[Inbound]) -> None:
        outcome = await self._commit(messages)
        if outcome is None:  # stopped while paused: the messages went back to the broker
            return
        if isinstance(outcome, BaseException):
            if len(messages) == 1:
                await self._fail(messages[0], outcome)
                return
            log.warning("batch of %d failed (%s); retrying one by one", len(messages), type(outcome).__name__)
            for message in messages:
                await self.handle([message])
            return
        self.last_batch_at = time.monotonic()
        outcome.committed()
        await self._publish_committed(outcome.events)
        await self._ack(messages)

    async def _commit(self, messages: Sequence[Inbound]) -> UnitOfWork | BaseException | None:
        """The batch's unit of work once committed; the error of a failure that is not transient;
        None if the service stopped while a transient fault lasted."""
        attempt = 0
        while True:
            try:
                done = await self._transaction(messages)
            except Exception as error:
                if classify(error) != "transient":
                    self._resume(attempt)
                    return error
                attempt += 1
                self._pause(error, attempt, len(messages))
                await self._keep(messages)
                if await self._stopping_within(backoff_delay(attempt, self._settings.retry_backoff_seconds)):
                    await self._hand_back(messages)
                    return None
                await self._keep(messages)
                continue
            self._resume(attempt)
            return done

    async def _transaction(self, messages: Sequence[Inbound]) -> UnitOfWork:
        now = self._clock()
        earlier = self._published.take()
        try:
            async with asyncio.timeout(self._settings.transaction_timeout_seconds), \
                    self._sessions() as session, session.begin():
                fresh_keys = await remember_new(session, self._inbox, [m.inbox_key for m in messages], now)
                # One message can come twice in a batch (a copy fetched before a long pause, beside its
                # redelivery after ack_wait): the inbox took its key once, so it is worked on once.
                fresh = list({m.inbox_key: m for m in messages if m.inbox_key in fresh_keys}.values())
                if skipped := len(messages) - len(fresh):
                    duplicates_ignored.labels(self.service).inc(skipped)
                uow = self._unit_of_work(session, now)
                if fresh:
                    await self._handler(uow, fresh)
                self._check_sizes(uow.events)
                await add_to_outbox(session, self._outbox, uow.events, now, self.RELAY_AFTER)
                await forget_published(session, self._outbox, earlier)
        except BaseException:
            self._published.give_back(earlier)
            raise
        return uow

    def _check_sizes(self, events: Sequence[Outgoing]) -> None:
        limit = self._max_payload() - HEADER_ROOM
        for event in events:
            if len(event.body) > limit:
                kind = ".".join(event.subject.split(".")[2:4])
                raise EventTooLarge(f"a {kind} event of {len(event.body)} bytes is over the broker's limit of {limit}")

    def _pause(self, error: Exception, attempt: int, count: int) -> None:
        fault = type(error).__name__
        if self.paused is None:
            self.paused = Pause(fault=fault, since=time.monotonic())
            consumer_paused.labels(self.service, self.subject_pattern).set(1)
        faults.labels(self.service, "transient").inc()
        log.warning("transient fault (%s): consumption paused, batch of %d kept, attempt %d", fault, count, attempt,
                    extra={"subject": self.subject_pattern})

    def _resume(self, attempts: int) -> None:
        if self.paused is None:
            return
        log.warning("fault passed after %.1fs and %d attempts: consuming again", time.monotonic() - self.paused.since,
                    attempts, extra={"subject": self.subject_pattern})
        self.paused = None
        consumer_paused.labels(self.service, self.subject_pattern).set(0)

    async def _stopping_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()

    async def _keep(self, messages: Sequence[Inbound]) -> None:
        """Tell the broker a held message is still being worked on, so it is not redelivered meanwhile."""
        for message in messages:
            if message.raw is not None:
                with contextlib.suppress(Exception):  # the broker may be what is away
                    await message.raw.in_progress()

    async def _hand_back(self, messages: Sequence[Inbound]) -> None:
        for message in messages:
            if message.raw is not None:
                with contextlib.suppress(Exception):
                    await message.raw.nak()

    async def _ack(self, messages: Sequence[Inbound]) -> None:
        failed = 0
        for message in messages:
            if message.raw is not None:
                try:
                    await message.raw.ack()
                except Exception:  # committed: the redelivery this causes is recognised by the inbox
                    failed += 1
        if failed:
            log.warning("%d acks not sent; those messages will be redelivered and recognised", failed)

    async def _publish_committed(self, events: Sequence[Outgoing]) -> None:
        if not events:
            return
        published = await self._publisher.publish_all(events)
        if len(published) < len(events):
            log.warning("%d events left in the outbox for the relay", len(events) - len(published))
        self._published.add(published)

    async def _fail(self, message: Inbound, error: BaseException) -> None:
        plan = plan_retry(
            error, message.deliveries, self._settings.max_deliver, self._settings.retry_backoff_seconds
        )
        kind = classify(error)
        faults.labels(self.service, kind).inc()
        if isinstance(plan, Retry):
            messages_failed.labels(self.service, self.subject_pattern, "retried").inc()
            log.error(
                "defect (%s) handling a message; retrying in %.1fs", type(error).__name__, plan.delay_seconds,
                exc_info=error,
                extra={"message_id": message.message_id, "subject": message.subject, "deliveries": message.deliveries},
            )
            if message.raw is not None:
                with contextlib.suppress(Exception):
                    await message.raw.nak(delay=plan.delay_seconds)
            return
        await self._dead_letter(message, plan, error)

    async def _dead_letter(self, message: Inbound, plan: DeadLetter, error: BaseException) -> None:
        messages_failed.labels(self.service, self.subject_pattern, "dead_lettered").inc()
        log.error("message dead-lettered: %s", plan.reason, exc_info=error,
                  extra={"message_id": message.message_id, "subject": message.subject})
        tenant = message.tenant or UNROUTABLE
        letter = Outgoing(
            event_id=derived_event_id("deadletter", tenant, self.service, message.message_id),
            subject=dead_letter(tenant, self.service),
            body=message.body,
        )
        try:
            await self._publisher.publish(
                letter,
                headers={
                    "Rapport-Error": plan.reason,
                    "Rapport-Error-Detail": _safe_detail(error),
                    "Rapport-Service": self.service,
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
                with contextlib.suppress(Exception):
                    await message.raw.nak(delay=self._settings.retry_backoff_seconds[-1])
            return
        if message.raw is not None:
            with contextlib.suppress(Exception):
                await message.raw.term()


def _safe_detail(error: BaseException) -> str:
    # Exception text from our own code names fields and codes, never payload values; driver errors
    # can quote SQL parameters, so only their class is kept.
    if type(error).__module__.startswith("rapport."):
        return str(error)[:500]
    return type(error).__name__
