"""The outbox relay: deletes the rows the fast path published since the last batch, then publishes
events whose fast-path publish never happened (a crash between commit and publish, or the broker
away), then deletes their rows. A row the broker refuses waits longer before each new attempt
(`available_at`), so rows that keep failing never stop the others from being relayed."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.shared.db.delivery import PublishedRows, claim_unpublished, forget_published, outbox_size, postpone
from rapport.shared.messaging.publish import EventPublisher
from rapport.shared.metrics import outbox_backlog
from rapport.shared.periodic import Periodic

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
        backoff: Sequence[float],
        interval_seconds: float = 1.0,
        batch: int = 500,
    ) -> None:
        self._service = service
        self._sessions = sessions
        self._outbox = outbox
        self._publisher = publisher
        self._published = published
        self._clock = clock
        self._backoff = backoff
        self._batch = batch
        self._loop = Periodic(f"{service}-outbox-relay", interval_seconds, self.relay_once)

    async def relay_once(self, *, ahead: timedelta = timedelta(0)) -> int:
        """Publish what is due (`ahead`: also what becomes due within it); returns how many were published."""
        now = self._clock()
        earlier = self._published.take()
        try:
            async with self._sessions() as session, session.begin():
                await forget_published(session, self._outbox, earlier)
                pending = await claim_unpublished(session, self._outbox, now + ahead, self._batch)
                outbox_backlog.labels(self._service).set(await outbox_size(session, self._outbox))
                if not pending:
                    return 0
                published = await self._publisher.publish_all(pending)
                await forget_published(session, self._outbox, published)
                taken = set(published)
                await postpone(session, self._outbox, [e.event_id for e in pending if e.event_id not in taken],
                               now, self._backoff)
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
