"""The one broker factory and the one stream. Everything NATS-specific stays in shared/messaging."""

from __future__ import annotations

import logging

from faststream import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub
from nats.js.api import StorageType

from shared.messaging.subjects import STREAM_NAME, STREAM_SUBJECTS
from shared.settings import Settings

DUPLICATE_WINDOW_SECONDS = 300

STREAM = JStream(
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
    return ConsumerConfig(max_deliver=settings.max_deliver + 2, ack_wait=60, max_ack_pending=5000)
