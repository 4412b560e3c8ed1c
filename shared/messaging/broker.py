"""The one broker factory and the one stream. Everything NATS-specific stays in shared/messaging."""

from __future__ import annotations

import builtins
import logging

import faststream.nats.subscriber.usecases.stream_pull_subscriber as _pull_subscriber
from faststream import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub
from nats.js.api import StorageType

from shared.messaging.subjects import STREAM_NAME, STREAM_SUBJECTS
from shared.settings import Settings

# FastStream 0.7.8's batch pull loop catches nats.errors.TimeoutError, but nats-py 2.16's
# multi-message fetch raises the plain asyncio.TimeoutError (a base class of it), which escapes the
# loop: the messages already fetched for the batch are dropped until ack_wait redelivers them and
# the task is restarted by FastStream's supervisor. Catching the base class there is the fix.
_pull_subscriber.TimeoutError = builtins.TimeoutError  # type: ignore[attr-defined,assignment]

DUPLICATE_WINDOW_SECONDS = 300

def rapport_stream() -> JStream:
    """The one stream, declared by every service on start. A new object per broker: FastStream
    remembers on the object that it declared it."""
    return JStream(
        STREAM_NAME,
        subjects=STREAM_SUBJECTS,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        storage=StorageType.FILE,
        max_age=30 * 24 * 3600,
    )


def make_broker(settings: Settings, url: str, *, service: str) -> NatsBroker:
    """Per-message log lines from FastStream go to DEBUG: at the default level they would halve throughput."""
    return NatsBroker(
        url,
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


def consumer_config(settings: Settings) -> ConsumerConfig:
    # ack_wait covers a slow batch; max_deliver bounds redelivery of a message whose handler dies
    # with its process (the handler dead-letters on its own last attempt otherwise).
    return ConsumerConfig(
        max_deliver=settings.max_deliver + 2, ack_wait=settings.ack_wait_seconds, max_ack_pending=5000
    )
