"""Publishing for a caller who waits for the answer (the gateway): the NATS side of it, kept here
with the rest of what is broker-specific.

`publish` is a JetStream publish that returns once the stream has stored the message (its ack),
with `Nats-Msg-Id` set so a resend is recognised. `listen` is a plain subscription to the subjects
the answers come on; it is in place at the server (flushed) before it returns, so an answer
published after it cannot be missed. Anything that means the broker cannot take the message now
raises `BrokerUnavailable`; when a publish timed out the message may still have been stored, which
is why callers resend with the same message id.

`follow` and `replay` read a stream with the position of each message (its stream sequence), so a
caller who saw up to some position can be given what it missed: `follow` from the next message
stored on, `replay` what is stored after a position, both through ordered ephemeral consumers
(server-side state only while they are read; nothing durable to clean up).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, ConnectionReconnectingError, NoRespondersError, OutboundBufferLimitError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, ServiceUnavailableError

from rapport.shared.messaging.subjects import stream_of

_UNAVAILABLE = (TimeoutError, NatsTimeout, NoRespondersError, ConnectionClosedError, ConnectionReconnectingError,
                OutboundBufferLimitError, ServiceUnavailableError, APIError, OSError)


class BrokerUnavailable(Exception):
    """The broker did not take the message (down, reconnecting, or no ack in time)."""


@dataclass(frozen=True)
class Stored:
    """A message as its stream holds it: where it is (`sequence`, the stream's own count)."""

    subject: str
    body: bytes
    sequence: int


class NotReplayable(Exception):
    """What was asked for cannot be replayed whole: `too_old` (the stream no longer holds all of it,
    or more than the limit is waiting) or `unknown` (a position past the stream's end: another
    stream's, or from before the stream was made again)."""

    def __init__(self, reason: Literal["too_old", "unknown"]) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Replayed:
    messages: list[Stored]
    through: int  # every message on the subject up to this sequence is in `messages` (or was not the subject's)


class Ingress:
    def __init__(self, connection: Callable[[], Client | None], *, timeout: float) -> None:
        self._connection = connection
        self._timeout = timeout
        self._contexts: tuple[Client, JetStreamContext] | None = None

    def _client(self) -> Client:
        client = self._connection()
        if client is None or not client.is_connected:
            raise BrokerUnavailable("not connected to the broker")
        return client

    def _jetstream(self, client: Client) -> JetStreamContext:
        """One JetStream context per connection: making one per publish was a tenth of the
        gateway's time taking a submission."""
        if self._contexts is None or self._contexts[0] is not client:
            self._contexts = (client, client.jetstream())
        return self._contexts[1]

    def max_payload(self) -> int:
        return int(self._client().max_payload)

    async def publish(self, subject: str, body: bytes, *, message_id: str) -> bool:
        """Store `body` on `subject`'s stream; True when the stream already had this message id."""
        client = self._client()
        try:
            ack = await self._jetstream(client).publish(subject, body, timeout=self._timeout, stream=stream_of(subject),
                                                   headers={"Nats-Msg-Id": message_id})
        except _UNAVAILABLE as error:
            raise BrokerUnavailable(type(error).__name__) from None
        return bool(ack.duplicate)

    async def follow(self, subject: str, on_message: Callable[[str, bytes, int], None]) -> None:
        """Every message stored on `subject` from now on, with its stream sequence: an ordered
        ephemeral consumer (in order, none twice; the client re-creates it after a reconnect), in
        place at the server on return."""
        client = self._client()

        async def deliver(msg: Msg) -> None:
            on_message(msg.subject, msg.data, msg.metadata.sequence.stream)

        try:
            await self._jetstream(client).subscribe(subject, stream=stream_of(subject), cb=deliver,
                                                    ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
        except _UNAVAILABLE as error:
            raise BrokerUnavailable(type(error).__name__) from None

    async def replay(self, subject: str, after: int, *, limit: int) -> Replayed:
        """What `subject`'s stream holds on `subject` after sequence `after`, up to its last message
        now, in order; raises NotReplayable when that is not all there (or more than `limit`)."""
        client = self._client()
        stream = stream_of(subject)
        js = self._jetstream(client)
        try:
            state = (await js.stream_info(stream)).state
            if after > state.last_seq:
                raise NotReplayable("unknown")
            if after + 1 < state.first_seq:
                raise NotReplayable("too_old")
            if after == state.last_seq:
                return Replayed([], after)
            through = state.last_seq
            subscription = await js.subscribe(subject, stream=stream, ordered_consumer=True, config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1))
            try:
                waiting = await subscription.consumer_info()
                delivered = (waiting.delivered.consumer_seq if waiting.delivered else None) or 0
                if (waiting.num_pending or 0) + delivered > limit:
                    raise NotReplayable("too_old")
                found: list[Stored] = []
                if not waiting.num_pending and not delivered:
                    return Replayed(found, through)
                while True:
                    msg = await subscription.next_msg(timeout=self._timeout)
                    sequence = msg.metadata.sequence.stream
                    if sequence > through:  # stored since: the caller's live follow has it
                        break
                    found.append(Stored(msg.subject, msg.data, sequence))
                    if sequence == through or not msg.metadata.num_pending:
                        break
                return Replayed(found, through)
            finally:
                await subscription.unsubscribe()
        except (NotReplayable, BrokerUnavailable):
            raise
        except (TimeoutError, *_UNAVAILABLE) as error:
            raise BrokerUnavailable(type(error).__name__) from None

    async def listen(self, subject: str, on_message: Callable[[str, bytes], None]) -> None:
        client = self._client()

        async def deliver(msg: Msg) -> None:
            on_message(msg.subject, msg.data)

        try:
            await client.subscribe(subject, cb=deliver)
            await client.flush(timeout=max(1, int(self._timeout)))
        except _UNAVAILABLE as error:
            raise BrokerUnavailable(type(error).__name__) from None
