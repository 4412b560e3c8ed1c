"""Publishing for a caller who waits for the answer (the gateway): the NATS side of it, kept here
with the rest of what is broker-specific.

`publish` is a JetStream publish that returns once the stream has stored the message (its ack),
with `Nats-Msg-Id` set so a resend is recognised. `listen` is a plain subscription to the subjects
the answers come on; it is in place at the server (flushed) before it returns, so an answer
published after it cannot be missed. Anything that means the broker cannot take the message now
raises `BrokerUnavailable`; when a publish timed out the message may still have been stored, which
is why callers resend with the same message id.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, ConnectionReconnectingError, NoRespondersError, OutboundBufferLimitError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import APIError, ServiceUnavailableError

from rapport.shared.messaging.subjects import stream_of

_UNAVAILABLE = (TimeoutError, NatsTimeout, NoRespondersError, ConnectionClosedError, ConnectionReconnectingError,
                OutboundBufferLimitError, ServiceUnavailableError, APIError, OSError)


class BrokerUnavailable(Exception):
    """The broker did not take the message (down, reconnecting, or no ack in time)."""


class Ingress:
    def __init__(self, connection: Callable[[], Client | None], *, timeout: float) -> None:
        self._connection = connection
        self._timeout = timeout

    def _client(self) -> Client:
        client = self._connection()
        if client is None or not client.is_connected:
            raise BrokerUnavailable("not connected to the broker")
        return client

    def max_payload(self) -> int:
        return int(self._client().max_payload)

    async def publish(self, subject: str, body: bytes, *, message_id: str) -> bool:
        """Store `body` on `subject`'s stream; True when the stream already had this message id."""
        client = self._client()
        try:
            ack = await client.jetstream().publish(subject, body, timeout=self._timeout, stream=stream_of(subject),
                                                   headers={"Nats-Msg-Id": message_id})
        except _UNAVAILABLE as error:
            raise BrokerUnavailable(type(error).__name__) from None
        return bool(ack.duplicate)

    async def listen(self, subject: str, on_message: Callable[[str, bytes], None]) -> None:
        client = self._client()

        async def deliver(msg: Msg) -> None:
            on_message(msg.subject, msg.data)

        try:
            await client.subscribe(subject, cb=deliver)
            await client.flush(timeout=max(1, int(self._timeout)))
        except _UNAVAILABLE as error:
            raise BrokerUnavailable(type(error).__name__) from None
