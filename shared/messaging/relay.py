"""The outbox relay: deletes the rows the fast path published since the last batch, then publishes
events whose fast-path publish never happened (a crash between commit and publish, or the broker
away), then deletes their rows."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db.delivery import PublishedRows, claim_unpublished, forget_published
from shared.messaging.publish import EventPublisher
from shared.metrics import outbox_backlog
from shared.periodic import Periodic

log = logging.getLogger("rapport.relay")


class OutboxRelay:
    def __init__(
        self,
        *,
        service: str,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Table,
        publisher: EventPublisher,
        published: PublishedRows,
        clock: Callable[[], datetime],
        interval_seconds: float = 1.0,
        grace: timedelta = timedelta(seconds=5),
        batch: int = 500,
    ) -> None:
        self._service = service
        self._sessions = sessions
        self._outbox = outbox
        self._publisher = publisher
        self._published = published
        self._clock = clock
        self._grace = grace  # leaves the fast path time to publish and clear its own rows
        self._batch = batch
        self._loop = Periodic(f"{service}-outbox-relay", interval_seconds, self.relay_once)

    async def relay_once(self, *, grace: timedelta | None = None) -> int:
        """Publish what is left over; returns how many events were published."""
        cutoff = self._clock() - (self._grace if grace is None else grace)
        earlier = self._published.take()
        try:
            async with self._sessions() as session, session.begin():
                await forget_published(session, self._outbox, earlier)
                pending = await claim_unpublished(session, self._outbox, cutoff, self._batch)
                outbox_backlog.labels(self._service).set(len(pending))
                if not pending:
                    return 0
                published = await self._publisher.publish_all(pending)
                await forget_published(session, self._outbox, published)
        except BaseException:
            self._published.give_back(earlier)
            raise
        if published:
            log.info("relayed %d events left in the outbox", len(published))
        return len(published)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
