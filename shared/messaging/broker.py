"""The one broker factory and the one stream. Everything NATS-specific stays in shared/messaging."""

from __future__ import annotations

import asyncio
import builtins
import logging
from time import monotonic

import faststream.nats.subscriber.usecases.stream_pull_subscriber as _pull_subscriber
from faststream import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.js.api import AckPolicy as ConsumerAckPolicy
from nats.js.errors import ServiceUnavailableError

from rapport.shared.settings import Settings

# FastStream 0.7.8's batch pull loop catches nats.errors.TimeoutError, but nats-py 2.16's
# multi-message fetch raises the plain asyncio.TimeoutError (a base class of it), which escapes the
# loop: the messages already fetched for the batch are dropped until ack_wait redelivers them and
# the task is restarted by FastStream's supervisor. Catching the base class there is the fix.
_pull_subscriber.TimeoutError = builtins.TimeoutError  # type: ignore[attr-defined,assignment]

# How long an idle consumer's pull request waits at the broker for a first message. FastStream's
# batch loop re-polls every `timeout` (our batch window, 5 ms) even when nothing comes: two pull
# requests and two status replies per window per subscriber, measured at about 13% of a core per
# idle service and 23% for nats-server. Waiting for the first message in one long pull, then giving
# the batch its window to fill, keeps the latency and drops the spin.
FIRST_MESSAGE_WAIT_SECONDS = 1.0


async def _consume_batches(self: _pull_subscriber.BatchPullStreamSubscriber) -> None:
    """FastStream's batch pull loop, but blocking for the first message instead of spinning."""
    assert self.subscription, "create_subscription first"
    batch_size, window = self.pull_sub.batch_size, self.pull_sub.timeout or 0.0
    while self.running:
        try:
            messages: list[Msg] = await self.subscription.fetch(batch=1, timeout=FIRST_MESSAGE_WAIT_SECONDS)
        except (builtins.TimeoutError, ConnectionClosedError, ServiceUnavailableError) as error:
            _unless_cancelled()
            if not isinstance(error, builtins.TimeoutError):
                await asyncio.sleep(0.1)  # the client is reconnecting: do not spin
            continue
        deadline = monotonic() + window
        while len(messages) < batch_size and self.running and (remaining := deadline - monotonic()) > 0:
            try:
                messages += await self.subscription.fetch(batch=batch_size - len(messages), timeout=remaining)
            except builtins.TimeoutError:
                _unless_cancelled()
                break
            except (ConnectionClosedError, ServiceUnavailableError):
                _unless_cancelled()
                messages.clear()  # unacked: the broker redelivers them
                break
        if messages and self.running:
            await self.consume(messages)


def _unless_cancelled() -> None:
    """A fetch cancelled from outside can surface as a timeout (nats-py waits with wait_for inside):
    the loop must end then, not fetch again, or the task outlives every attempt to stop it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


_pull_subscriber.BatchPullStreamSubscriber._consume_pull = _consume_batches  # type: ignore[method-assign]

def bound_stream(name: str) -> JStream:
    """A stream a subscriber binds to. Declared by ensure_streams (streams.py), never by FastStream,
    which would merge subjects into an existing stream and overwrite what an operator set."""
    return JStream(name, declare=False)


def broker_servers(url: str) -> list[str]:
    """`nats://a:4222,nats://b:4222,nats://c:4222` (a cluster) as the list of servers the client tries."""
    return [server.strip() for server in url.split(",") if server.strip()]


def make_broker(settings: Settings, url: str, *, service: str) -> NatsBroker:
    """Per-message log lines from FastStream go to DEBUG: at the default level they would halve throughput."""
    return NatsBroker(
        broker_servers(url),
        name=f"rapport-{service}",
        logger=logging.getLogger(f"rapport.{service}.broker"),
        log_level=logging.DEBUG,
        graceful_timeout=settings.graceful_timeout_seconds,
        # Never FastStream's NATS default (terminate on error): subscribers ack by hand, see consumer.py.
        ack_policy=AckPolicy.MANUAL,
        max_reconnect_attempts=-1,
    )


def batch_pull(settings: Settings) -> PullSub:
    return PullSub(batch_size=settings.batch_size, timeout=settings.batch_wait_seconds, batch=True)


def consumer_config(settings: Settings, durable: str, subject: str) -> ConsumerConfig:
    # No max_deliver: the server must never give up on a message by itself, whatever the fault
    # (consumer.py decides, and dead-letters only poison and defects). ack_wait covers a slow batch;
    # a paused batch keeps its messages with in-progress acks.
    return ConsumerConfig(
        durable_name=durable, filter_subject=subject, ack_policy=ConsumerAckPolicy.EXPLICIT, max_deliver=-1,
        ack_wait=settings.ack_wait_seconds, max_ack_pending=5000,
    )
