"""The inbox and outbox tables each consuming / producing service owns (`<service>_inbox`, `<service>_outbox`).

Inbox: one row per inbound message, written in the same transaction as the work it caused, so a
redelivered message is recognised and does nothing twice. Its key is a digest of the tenant the
message arrived for and its message id: fixed-length whatever the sender chose, and one tenant's
message id never matches another tenant's. Outbox: the events a transaction wants published,
written in that same transaction; a row is deleted once the broker has acknowledged it (in the next
transaction that touches the outbox: `PublishedRows`). A row the broker did not take waits
`available_at` before the relay tries it again, so no row can hold the others back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Column, Index, Integer, LargeBinary, String, Table, any_, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from rapport.shared.db.base import Base, UtcDateTime
from rapport.shared.db.engine import is_postgres
from rapport.shared.db.upsert import insert_ignoring_conflicts


def inbox_table(service: str) -> Table:
    return Table(
        f"{service}_inbox",
        Base.metadata,
        Column("message_key", String(64), primary_key=True),
        Column("received_at", UtcDateTime, nullable=False),
    )


def inbox_key(tenant: str, message_id: str) -> str:
    return hashlib.sha256(f"{tenant}\x1f{message_id}".encode()).hexdigest()


def outbox_table(service: str) -> Table:
    table = Table(
        f"{service}_outbox",
        Base.metadata,
        Column("event_id", String(64), primary_key=True),
        Column("subject", String(300), nullable=False),
        Column("body", LargeBinary, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("available_at", UtcDateTime, nullable=False),
        Column("attempts", Integer, nullable=False, server_default="0"),
    )
    Index(f"ix_{service}_outbox_available_at", table.c.available_at)
    return table


@dataclass(frozen=True)
class Outgoing:
    """One event ready for the broker: its id (also the Nats-Msg-Id), subject and serialised body."""

    event_id: str
    subject: str
    body: bytes


async def remember_new(session: AsyncSession, inbox: Table, keys: Sequence[str], now: datetime) -> set[str]:
    """Record these inbox keys; return the ones not seen before (in this same transaction)."""
    if not keys:
        return set()
    statement = insert_ignoring_conflicts(session, inbox, ["message_key"]).returning(inbox.c.message_key)
    rows = [{"message_key": k, "received_at": now} for k in dict.fromkeys(keys)]
    # RETURNING gives exactly the rows this transaction inserted: on PostgreSQL a concurrent
    # insert of the same id waits for the other transaction and then returns nothing.
    return set((await session.execute(statement, rows)).scalars())


async def add_to_outbox(session: AsyncSession, outbox: Table, events: Sequence[Outgoing], now: datetime,
                        relay_after: timedelta) -> None:
    """`relay_after`: how long the fast path has to publish these before the relay may."""
    if events:
        await session.execute(
            outbox.insert(),
            [{"event_id": e.event_id, "subject": e.subject, "body": e.body, "created_at": now,
              "available_at": now + relay_after, "attempts": 0} for e in events],
        )


async def claim_unpublished(session: AsyncSession, outbox: Table, now: datetime, limit: int) -> list[Outgoing]:
    """Rows left behind by a publish that never happened (crash, broker down), due now. On
    PostgreSQL rows are locked SKIP LOCKED so relays of several replicas share the work; SQLite has
    one writer."""
    query = (
        select(outbox.c.event_id, outbox.c.subject, outbox.c.body)
        .where(outbox.c.available_at <= now)
        .order_by(outbox.c.available_at)
        .limit(limit)
    )
    if is_postgres(session):
        query = query.with_for_update(skip_locked=True)
    rows = (await session.execute(query)).all()
    return [Outgoing(event_id=r.event_id, subject=r.subject, body=r.body) for r in rows]


async def postpone(session: AsyncSession, outbox: Table, event_ids: Sequence[str], now: datetime,
                   backoff: Sequence[float]) -> None:
    """Rows the broker did not take: each waits longer after every failed attempt, up to the last step."""
    if not event_ids:
        return
    attempts = (await session.execute(
        select(outbox.c.event_id, outbox.c.attempts).where(outbox.c.event_id.in_(list(event_ids))))).all()
    for event_id, tried in attempts:
        delay = backoff[min(tried, len(backoff) - 1)]
        await session.execute(update(outbox).where(outbox.c.event_id == event_id).values(
            attempts=tried + 1, available_at=now + timedelta(seconds=delay)))


async def outbox_size(session: AsyncSession, outbox: Table) -> int:
    return int((await session.execute(select(func.count()).select_from(outbox))).scalar_one())


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
    """Inbox rows older than any message a stream still keeps (Settings.inbox_retention)."""
    await session.execute(delete(inbox).where(inbox.c.received_at < before))
