"""Taking a submission or attendance in over HTTP: publish it to the tenant's inbound subject
(`Channel`: in.submissions or in.attendance), wait for ingest's answer. The tenant is the caller's
token's, never the body's.

The message id (the `Nats-Msg-Id`, and the `inbound_message_id` of the answer) is derived from the
tenant and the caller's `Idempotency-Key`, or from the tenant and the body when no key is sent, so a
resend is the same message: ingest's inbox answers a message once, the gateway's stored answers
answer the resend. Derived, not taken as sent, so one tenant's keys can never collide with
another's (not even in the broker's short duplicate window, which every tenant shares).

Each message is recorded with a digest of its body (a keyed one before it is published, one named
by its body while it is, the record's insert telling a resend from a new message): a poll of its id
is then answered 202 until every answer is in, and an Idempotency-Key sent again with another body is
refused without publishing (the IETF Idempotency-Key draft's 422), where the broker and ingest would
otherwise take it for the first message and answer it with the first body's answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol, TypeVar

from rapport.services.gateway.answers import Answer, AnswerWaiter, Pending
from rapport.services.gateway.repository import Seen, Status
from rapport.shared.messaging import subjects
from rapport.shared.messaging.consumer import HEADER_ROOM
from rapport.shared.messaging.ingress import Ingress

log = logging.getLogger("rapport.gateway")
T = TypeVar("T")

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


# Every message id the gateway derives starts so; the answers to other messages are not its to keep.
GATEWAY_MESSAGE_PREFIX = "http-"
KEYED_PREFIX = f"{GATEWAY_MESSAGE_PREFIX}key:"
LATE_LOOK_UP_SECONDS = 3.0


@dataclass(frozen=True)
class Channel:
    """Where a kind of inbound message goes and what answers it: ingest answers on
    `rapport.<tenant>.<entity>.accepted|rejected`."""

    name: str
    inbound: Callable[[str], str]
    entity: str


SUBMISSIONS = Channel("submissions", subjects.submissions_in, "submission")
ATTENDANCE = Channel("attendance", subjects.attendance_in, "attendance")


def message_id_for(tenant: str, body: bytes, idempotency_key: str | None, channel: Channel = SUBMISSIONS) -> str:
    """Attendance's ids are derived apart from submissions' (both inbound subjects share one stream's
    duplicate window): one Idempotency-Key used for a submission and an appointment names two messages."""
    scope = "" if channel is SUBMISSIONS else f"{channel.name}\x1f"
    if idempotency_key is not None:
        digest = hashlib.sha256(f"{tenant}\x1f{scope}{idempotency_key}".encode()).hexdigest()
        return f"{KEYED_PREFIX}{digest[:40]}"
    digest = hashlib.sha256(tenant.encode() + b"\x1f" + scope.encode() + body).hexdigest()
    return f"{GATEWAY_MESSAGE_PREFIX}body:{digest[:40]}"


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def body_limit(configured: int, max_payload: int) -> int:
    """The largest body taken: the configured one, but always with room for the headers under the
    broker's max_payload, so nothing taken over HTTP can fail to publish for its size."""
    return min(configured, max_payload - HEADER_ROOM)


class Messages(Protocol):
    async def complete(self, tenant: str, message_id: str) -> list[Answer] | None: ...

    async def seen(self, tenant: str, message_id: str, body_digest: str) -> Seen: ...

    async def record(self, tenant: str, message_id: str, *, body_digest: str, form: str, now: datetime) -> bool: ...

    async def status(self, tenant: str, message_id: str) -> Status: ...


class IdempotencyKeyReused(Exception):
    """The Idempotency-Key was first sent with another body: nothing is published."""


class RecordUnavailable(Exception):
    """The database did not read or take the record of the message."""


@dataclass(frozen=True)
class Received:
    message_id: str
    answers: list[Answer] | None  # None: no answer within the wait


@dataclass
class Intake:
    ingress: Ingress
    waiter: AnswerWaiter
    stored: Messages
    wait_seconds: float
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _unawaited: set[asyncio.Future[Any]] = field(default_factory=set, init=False, repr=False)

    async def submit(self, tenant: str, body: bytes, message_id: str, form: str, *,
                     channel: Channel = SUBMISSIONS) -> Received:
        """Raises BrokerUnavailable when the broker did not take the message (nothing is answered
        then; a resend with the same message id is safe whether or not it was stored),
        IdempotencyKeyReused before anything is published, RecordUnavailable when the database
        did not take the record (a resend is safe then too).

        A keyed message is read and recorded before it is published, so that of two bodies sent
        with one key only the one recorded is ever published. A message whose id is its body's
        digest can have no other body, so nothing is read first: it is recorded while it is
        published and answered, and the record's insert tells a resend (recorded by an earlier
        request) from a new message. A resend's answers are then looked up, as they will not come
        live again (its republishing is ingest's inbox's duplicate); a new message's come live,
        looked up only late. The record is in before a 202 is answered, so every 202 can be
        polled; an answer that came in time does not wait for it."""
        digest = body_digest(body)
        if not message_id.startswith(KEYED_PREFIX):
            recording = asyncio.ensure_future(self._guarded(
                self.stored.record(tenant, message_id, body_digest=digest, form=form, now=self.clock()), message_id))
            return await self._published(tenant, body, message_id, channel, sent_before=False, recording=recording)
        seen = await self._guarded(self.stored.seen(tenant, message_id, digest), message_id)
        if seen.reused:
            raise IdempotencyKeyReused
        if seen.answers is not None:
            return Received(message_id, seen.answers)
        if not seen.recorded:
            first = await self._guarded(self.stored.record(tenant, message_id, body_digest=digest, form=form,
                                                           now=self.clock()), message_id)
            if not first and (await self._guarded(self.stored.seen(tenant, message_id, digest), message_id)).reused:
                raise IdempotencyKeyReused  # another request recorded the key with its body a moment ago
        return await self._published(tenant, body, message_id, channel, sent_before=seen.recorded, recording=None)

    async def _published(self, tenant: str, body: bytes, message_id: str, channel: Channel, *,
                         sent_before: bool, recording: asyncio.Future[bool] | None) -> Received:
        pending = await self.waiter.expect(tenant, message_id, channel.entity)
        answers: list[Answer] | None = None
        try:
            try:
                if recording is not None:
                    recording.add_done_callback(partial(_look_up_if_resent, pending))
                await self.ingress.publish(channel.inbound(tenant), body, message_id=message_id)
                answers = await pending.wait(self.wait_seconds, look_up=lambda: self._stored(tenant, message_id),
                                             look_up_after=0.5 if sent_before else LATE_LOOK_UP_SECONDS)
            finally:
                if recording is not None:
                    if answers is None:  # a 202, or nothing published: the record is what a poll or resend reads
                        await recording
                    else:
                        self._finish_later(recording)
        finally:
            self.waiter.release(pending)
        return Received(message_id, answers)

    def _finish_later(self, step: asyncio.Future[T]) -> None:
        """Keeps a record's write going after its request no longer waits for it (a failure
        was logged by _guarded)."""
        self._unawaited.add(step)

        def done(future: asyncio.Future[T]) -> None:
            self._unawaited.discard(future)
            if not future.cancelled():
                future.exception()  # retrieved: the failure was said where it happened

        step.add_done_callback(done)

    async def _guarded(self, step: Awaitable[T], message_id: str) -> T:
        try:
            return await step
        except Exception as error:  # the database away: answering now would leave a 202 nobody can poll
            log.warning("the message's record could not be read or written (%s)", type(error).__name__,
                        extra={"message_id": message_id})
            raise RecordUnavailable from None

    async def _stored(self, tenant: str, message_id: str) -> list[Answer] | None:
        try:
            return await self.stored.complete(tenant, message_id)
        except Exception:  # the database away: the live answer still comes; only a resend's would not
            return None


def _look_up_if_resent(pending: Pending, record: asyncio.Future[bool]) -> None:
    """The record's insert found the message recorded by an earlier request: a resend."""
    if not record.cancelled() and record.exception() is None and not record.result():
        pending.look_up_now()
