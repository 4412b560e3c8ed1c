"""The gateway's answers on disk: written by the projection, read when a request's answer will not
come again (a resend of a message already answered) and when the caller polls a message's id. And
the messages it published: recorded before each publish, with the digest of the body, so a poll
tells pending from never sent and a reused Idempotency-Key with another body is recognised."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from rapport.services.gateway.answers import Answer, complete
from rapport.services.gateway.models import PublishedMessage, StoredAnswer
from rapport.shared.db.delivery import inbox_key
from rapport.shared.db.engine import READ_ONLY
from rapport.shared.db.group_commit import GroupCommit
from rapport.shared.db.upsert import insert_ignoring_conflicts


async def save_answers(session: AsyncSession, answers: Sequence[tuple[str, str, Answer]], now: datetime) -> None:
    """(tenant, inbound message id, answer); an answer stored already is left as it is."""
    if not answers:
        return
    rows = {(inbox_key(t, m), a.part): {"message_key": inbox_key(t, m), "part": a.part, "parts": a.parts,
                                        "answered_at": now, "answer": a.stored()} for t, m, a in answers}
    statement = insert_ignoring_conflicts(session, StoredAnswer.__table__, ["message_key", "part"])  # type: ignore[arg-type]
    await session.execute(statement, list(rows.values()))


async def forget_old_answers(session: AsyncSession, before: datetime) -> None:
    """The answers and the published messages older than `before` (the inboxes' retention: after
    it, a resend is a new message everywhere)."""
    await session.execute(delete(StoredAnswer).where(StoredAnswer.answered_at < before))
    await session.execute(delete(PublishedMessage).where(PublishedMessage.received_at < before))


async def _digest(session: AsyncConnection, key: str) -> str | None:
    return (await session.execute(
        select(PublishedMessage.body_digest).where(PublishedMessage.message_key == key))).scalar()


async def _answers(session: AsyncConnection, key: str) -> list[Answer] | None:
    rows = (await session.execute(select(StoredAnswer.answer).where(StoredAnswer.message_key == key))).scalars().all()
    return complete({a.part: a for a in map(Answer.from_stored, rows)})


@dataclass(frozen=True)
class Seen:
    """What the gateway knows of a message id as a request for it comes: `recorded` when it was
    published for an earlier request; `reused` when that request sent another body; the answers
    when all are stored."""

    recorded: bool
    reused: bool = False
    answers: list[Answer] | None = None


@dataclass(frozen=True)
class Status:
    """A poll's view of a message: `form` None when the gateway never recorded the id for the tenant."""

    form: str | None
    answers: list[Answer] | None


class MessageRecords:
    """The records of the messages published, one INSERT for the requests of the moment (a group
    commit, shared/db/group_commit.py); per row, whether it was the one inserted (two requests racing
    with one id: only the first)."""

    async def write(self, session: AsyncSession, rows: Sequence[dict[str, Any]]) -> list[bool]:
        unique = list({row["message_key"]: row for row in reversed(rows)}.values())  # the first of each key
        statement = insert_ignoring_conflicts(session, PublishedMessage.__table__, ["message_key"])  # type: ignore[arg-type]
        inserted = set((await session.execute(
            statement.values(unique).returning(PublishedMessage.message_key))).scalars())
        claimed: set[str] = set()
        firsts = []
        for row in rows:
            firsts.append(row["message_key"] in inserted and row["message_key"] not in claimed)
            claimed.add(row["message_key"])
        return firsts


MESSAGE_RECORDS = MessageRecords()


class StoredAnswers:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], writes: GroupCommit | None = None) -> None:
        """`writes`: the gateway's group commit, shared with the audit trail's rows."""
        self._sessions = sessions
        self._writes = writes or GroupCommit(sessions)

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[AsyncConnection]:
        """A connection that only reads: on SQLite it takes no write lock (every request reads, and
        a read queued behind the other services' writers was most of an HTTP request's time). A
        plain connection, not an ORM session: SQLAlchemy was a quarter of the gateway's CPU on the
        submission path, much of it the sessions' bookkeeping."""
        engine = self._sessions.kw["bind"]
        assert isinstance(engine, AsyncEngine)
        async with engine.connect() as connection:
            await connection.execution_options(**READ_ONLY)
            yield connection

    async def complete(self, tenant: str, message_id: str) -> list[Answer] | None:
        """Every part's answer to the message, or None while any is missing."""
        async with self._reading() as session:
            return await _answers(session, inbox_key(tenant, message_id))

    async def seen(self, tenant: str, message_id: str, body_digest: str) -> Seen:
        """One read (no write lock): whether the id was recorded, with which body, and its answers."""
        key = inbox_key(tenant, message_id)
        async with self._reading() as session:
            stored = await _digest(session, key)
            if stored is None:
                return Seen(recorded=False)
            if stored != body_digest:
                return Seen(recorded=True, reused=True)
            return Seen(recorded=True, answers=await _answers(session, key))

    async def record(self, tenant: str, message_id: str, *, body_digest: str, form: str, now: datetime) -> bool:
        """Record the message (an insert shared with the requests of the moment); False when
        another request recorded the id first (two requests racing with one id: only one inserts)."""
        return await self._writes.write(MESSAGE_RECORDS, {
            "message_key": inbox_key(tenant, message_id), "body_digest": body_digest, "form": form, "received_at": now})

    async def status(self, tenant: str, message_id: str) -> Status:
        key = inbox_key(tenant, message_id)
        async with self._reading() as session:
            form = (await session.execute(
                select(PublishedMessage.form).where(PublishedMessage.message_key == key))).scalar()
            return Status(form=form, answers=await _answers(session, key))
