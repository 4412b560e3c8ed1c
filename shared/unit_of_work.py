"""A batch's unit of work: what a handler reads and writes goes through it, and nothing the batch did
counts until it commits.

The consumer (shared/messaging/consumer.py) opens one per batch inside the batch's transaction,
hands it to the service's handler, writes the events the handler published to the outbox beside the
inbox rows, commits, and only then runs what the handler asked to happen after commit (counting
metrics). A batch that fails and is retried message by message is thus counted once, by the
attempts that committed.

Each service's unit of work adds its repositories (ingest: `IngestUnitOfWork.submissions`); handler
tests use in-memory ones of our own code instead of a database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from rapport.shared.db.delivery import Outgoing


class UnitOfWork:
    """The events a batch will publish and the actions it takes once committed, at one time `now`."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.events: list[Outgoing] = []
        self._after_commit: list[Callable[[], None]] = []

    def publish(self, events: Iterable[Outgoing]) -> None:
        """Events to publish if the batch commits (outbox rows in its transaction)."""
        self.events.extend(events)

    def after_commit(self, action: Callable[[], None]) -> None:
        self._after_commit.append(action)

    def committed(self) -> None:
        """Called by the consumer once the transaction is committed; never for a failed batch."""
        actions, self._after_commit = self._after_commit, []
        for action in actions:
            action()


class SessionUnitOfWork(UnitOfWork):
    """A unit of work whose repositories share one database session (and so one transaction)."""

    def __init__(self, session: AsyncSession, now: datetime) -> None:
        super().__init__(now)
        self.session = session
