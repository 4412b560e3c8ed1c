"""Publishing that rides out a broker failover, for the clients Rapport ships (`rapport submit`,
`rapport bench`, the demo): the same message is sent again with the same `Nats-Msg-Id` until the
stream acknowledges it or a deadline passes. Sending again is safe: the stream's duplicate window
and ingest's inbox (keyed by tenant and message id) both recognise the message.

When the deadline passes, whether the message was stored is unknown (a publish whose ack was lost
may have been stored): `StoreUnknown` says so and names the message id to send it again with."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from rapport.shared.messaging.ingress import BrokerUnavailable, Ingress

BACKOFF_SECONDS: Sequence[float] = (0.2, 0.5, 1.0, 2.0)


class StoreUnknown(Exception):
    """No acknowledgement before the deadline: the message may or may not have been stored."""

    def __init__(self, message_id: str, attempts: int, last_error: str) -> None:
        super().__init__(f"no acknowledgement for message {message_id} after {attempts} attempts ({last_error}); "
                         "it may or may not have been stored: send it again with the same message id")
        self.message_id = message_id
        self.attempts = attempts


async def publish_until_stored(ingress: Ingress, subject: str, body: bytes, *, message_id: str, within: float,
                               backoff: Sequence[float] = BACKOFF_SECONDS,
                               clock: Callable[[], float] = time.monotonic) -> bool:
    """Publish until the stream acknowledges it; True when the stream already had this message id.
    The last attempt may end up to one ack timeout (the ingress's) after `within`."""
    deadline = clock() + within
    attempts = 0
    while True:
        attempts += 1
        try:
            return await ingress.publish(subject, body, message_id=message_id)
        except BrokerUnavailable as error:
            delay = backoff[min(attempts - 1, len(backoff) - 1)]
            if clock() + delay >= deadline:
                raise StoreUnknown(message_id, attempts, str(error)) from None
            await asyncio.sleep(delay)
