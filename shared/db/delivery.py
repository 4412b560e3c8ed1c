"""The inbox and outbox tables each consuming / producing service owns (`<service>_inbox`, `<service>_outbox`).

Inbox: one row per inbound message id, written in the same transaction as the work it caused, so a
redelivered message is recognised and does nothing twice. Outbox: the events a transaction wants
published, written in that same transaction; a row is deleted once the broker has acknowledged it
(in the next transaction that touches the outbox: `PublishedRows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Column, Index, LargeBinary, String, Table, any_, bindparam, delete, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.base import Base, UtcDateTime
from shared.db.engine import is_postgres
from shared.db.upsert import insert_ignoring_conflicts


def inbox_table(service: str) -> Table:
    return Table(
        f"{service}_inbox",
        Base.metadata,
        Column("message_id", String(200), primary_key=True),
        Column("received_at", UtcDateTime, nullable=False),
    )


def outbox_table(service: str) -> Table:
    table = Table(
        f"{service}_outbox",
        Base.metadata,
        Column("event_id", String(64), primary_key=True),
        Column("subject", String(300), nullable=False),
        Column("body", LargeBinary, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
    )
    Index(f"ix_{service}_outbox_created_at", table.c.created_at)
    return table


@dataclass(frozen=True)
class Outgoing:
    """One event ready for the broker: its id (also the Nats-Msg-Id), subject and serialised body."""

    event_id: str
    subject: str
    body: bytes


async def remember_new(session: AsyncSession, inbox: Table, message_ids: Sequence[str], now: datetime) -> set[str]:
    """Record these message ids; return the ones not seen before (in this same transaction)."""
    if not message_ids:
        return set()
    statement = insert_ignoring_conflicts(session, inbox, ["message_id"]).returning(inbox.c.message_id)
    rows = [{"message_id": m, "received_at": now} for m in dict.fromkeys(message_ids)]
    # RETURNING gives exactly the rows this transaction inserted: on PostgreSQL a concurrent
    # insert of the same id waits for the other transaction and then returns nothing.
    return set((await session.execute(statement, rows)).scalars())


async def add_to_outbox(session: AsyncSession, outbox: Table, events: Sequence[Outgoing], now: datetime) -> None:
    if events:
        await session.execute(
            outbox.insert(),
            [{"event_id": e.event_id, "subject": e.subject, "body": e.body, "created_at": now} for e in events],
        )


async def claim_unpublished(session: AsyncSession, outbox: Table, older_than: datetime, limit: int) -> list[Outgoing]:
    """Rows left behind by a publish that never happened (crash, broker down). On PostgreSQL rows
    are locked SKIP LOCKED so relays of several replicas share the work; SQLite has one writer."""
    query = (
        select(outbox.c.event_id, outbox.c.subject, outbox.c.body)
        .where(outbox.c.created_at < older_than)
        .order_by(outbox.c.created_at)
        .limit(limit)
    )
    if is_postgres(session):
        query = query.with_for_update(skip_locked=True)
    rows = (await session.execute(query)).all()
    return [Outgoing(event_id=r.event_id, subject=r.subject, body=r.body) for r in rows]


async def forget_published(session: AsyncSession, outbox: Table, event_ids: Sequence[str]) -> None:
    if not event_ids:
        return
    if is_postgres(session):  # one statement shape whatever the count: prepared once per connection
        ids = bindparam("ids", type_=postgresql.ARRAY(String))
        await session.execute(delete(outbox).where(outbox.c.event_id == any_(ids)), {"ids": list(event_ids)})
    else:
        await session.execute(delete(outbox).where(outbox.c.event_id.in_(list(event_ids))))


@dataclass
class PublishedRows:
    """Ids of outbox rows already published, deleted by the next transaction that touches the outbox
    (the next batch's, or the relay's before it looks for leftovers), so that a publish costs no
    transaction of its own. Lost in a crash: the relay then republishes those rows, and the stream's
    duplicate window and the consumers' inboxes absorb the repeat."""

    _ids: list[str] = field(default_factory=list)

    def add(self, event_ids: Sequence[str]) -> None:
        self._ids.extend(event_ids)

    def take(self) -> list[str]:
        taken, self._ids = self._ids, []
        return taken

    def give_back(self, event_ids: Sequence[str]) -> None:
        self._ids[:0] = event_ids


async def forget_old_inbox(session: AsyncSession, inbox: Table, before: datetime) -> None:
    await session.execute(delete(inbox).where(inbox.c.received_at < before))


# A message id only needs remembering while the broker could still redeliver it or a sender resend it
# within the stream's duplicate window; two weeks is far beyond both.
INBOX_RETENTION = timedelta(days=14)
