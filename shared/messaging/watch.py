"""A watch on a service's durable consumers: each is there, and each is moving.

A pull consumer that is deleted on the server does not fail its fetches, they only time out, so a
service would wait for ever with nothing said. Every few seconds the watch asks the broker about
each consumer. A missing one is logged and created again, from just after the last message it was
known to have acknowledged (or from the stream's start when that is unknown: every stream keeps
messages for less time than the inboxes remember them, so a replay does nothing twice). Readiness
reads the watch: a consumer is `consuming`, `paused` by a transient fault, or `stalled` with
messages waiting and none taken for `stall_seconds`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import NotFoundError

from rapport.shared.messaging.consumer import BatchConsumer
from rapport.shared.messaging.subjects import INBOUND_STREAM
from rapport.shared.metrics import consumers_recreated
from rapport.shared.periodic import Periodic
from rapport.shared.settings import Settings

log = logging.getLogger("rapport.watch")


@dataclass
class Subscription:
    stream: str
    config: ConsumerConfig
    consumer: BatchConsumer[Any]

    @property
    def durable(self) -> str:
        return str(self.config.durable_name)


@dataclass
class _Seen:
    waiting: int
    delivered: int
    acked_stream_seq: int
    moved_at: float


class ConsumerWatch:
    def __init__(self, service: str, subscriptions: Sequence[Subscription], jetstream: Callable[[], JetStreamContext],
                 settings: Settings, interval_seconds: float = 5.0) -> None:
        self._service = service
        self._subscriptions = subscriptions
        self._jetstream = jetstream
        self._settings = settings
        self._seen: dict[str, _Seen] = {}
        self._missing: set[str] = set()
        self._loop = Periodic(f"{service}-consumer-watch", interval_seconds, self.check_once)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def check_once(self) -> None:
        for subscription in self._subscriptions:
            try:
                info = await asyncio.wait_for(
                    self._jetstream().consumer_info(subscription.stream, subscription.durable),
                    self._settings.readiness_timeout_seconds,
                )
            except NotFoundError:
                self._missing.add(subscription.durable)
                await self._recreate(subscription)
                continue
            self._note(subscription.durable, info)

    def _note(self, durable: str, info: ConsumerInfo) -> None:
        delivered = info.delivered.consumer_seq if info.delivered and info.delivered.consumer_seq else 0
        acked = info.ack_floor.stream_seq if info.ack_floor and info.ack_floor.stream_seq else 0
        waiting = (info.num_pending or 0) + (info.num_ack_pending or 0)
        before = self._seen.get(durable)
        moved = before is None or before.delivered != delivered or before.acked_stream_seq != acked
        self._seen[durable] = _Seen(waiting=waiting, delivered=delivered, acked_stream_seq=acked,
                                    moved_at=time.monotonic() if moved else before.moved_at)  # type: ignore[union-attr]

    async def _recreate(self, subscription: Subscription) -> None:
        seen = self._seen.get(subscription.durable)
        config = subscription.config
        if seen is not None and seen.acked_stream_seq and subscription.stream != INBOUND_STREAM:
            config = replace(config, deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                             opt_start_seq=seen.acked_stream_seq + 1)
        log.error("durable consumer %s on %s is missing; creating it again from %s", subscription.durable,
                  subscription.stream, f"stream sequence {config.opt_start_seq}" if config.opt_start_seq
                  else "the start of the stream (the inbox recognises what was done)",
                  extra={"consumer": subscription.durable, "stream": subscription.stream})
        await self._jetstream().add_consumer(subscription.stream, config=config)
        consumers_recreated.labels(self._service).inc()
        self._seen.pop(subscription.durable, None)
        self._missing.discard(subscription.durable)

    def states(self) -> dict[str, str]:
        now = time.monotonic()
        states = {}
        for subscription in self._subscriptions:
            consumer, seen = subscription.consumer, self._seen.get(subscription.durable)
            if subscription.durable in self._missing:
                states[subscription.durable] = "missing: it could not be created again yet"
            elif consumer.paused is not None:
                states[subscription.durable] = (f"paused: {consumer.paused.fault} for "
                                                f"{now - consumer.paused.since:.0f}s")
            elif seen is not None and seen.waiting and \
                    now - max(seen.moved_at, consumer.last_batch_at) > self._settings.stall_seconds:
                states[subscription.durable] = (f"stalled: {seen.waiting} messages waiting, none taken for "
                                                f"{now - max(seen.moved_at, consumer.last_batch_at):.0f}s")
            else:
                states[subscription.durable] = "consuming"
        return states
