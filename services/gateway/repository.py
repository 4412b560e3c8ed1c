"""The gateway's answers on disk: written by the projection, read when a request's answer will not
come again (a resend of a message already answered) and when the caller polls a message's id. And
the messages it published: recorded before each publish, with the digest of the body, so a poll
tells pending from never sent and a reused Idempotency-Key with another body is recognised."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.gateway.answers import Answer, complete
from rapport.services.gateway.models import PublishedMessage, StoredAnswer
from rapport.shared.db.delivery import inbox_key
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


async def _answers(session: AsyncSession, key: str) -> list[Answer] | None:
    rows = (await session.execute(select(StoredAnswer.answer).where(StoredAnswer.message_key == key))).scalars().all()
    return complete({a.part: a for a in map(Answer.from_stored, rows)})


@dataclass(frozen=True)
class Seen:
    """What the gateway knew of a message id when a request for it came: `first` when this request
    recorded it; `reused` when it was recorded with another body; the answers when all are stored."""

    first: bool
    reused: bool = False
    answers: list[Answer] | None = None


@dataclass(frozen=True)
class Status:
    """A poll's view of a message: `form` None when the gateway never recorded the id for the tenant."""

    form: str | None
    answers: list[Answer] | None


class StoredAnswers:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def complete(self, tenant: str, message_id: str) -> list[Answer] | None:
        """Every part's answer to the message, or None while any is missing."""
        async with self._sessions() as session:
            return await _answers(session, inbox_key(tenant, message_id))

    async def record(self, tenant: str, message_id: str, *, body_digest: str, form: str, now: datetime) -> Seen:
        """Record the message before it is published (one read, and one insert the first time). A
        message recorded already is answered from the stored answers when they are all in; two
        requests racing with one id are told apart by the insert, which only one of them makes."""
        key = inbox_key(tenant, message_id)
        async with self._sessions() as session:
            stored = (await session.execute(
                select(PublishedMessage.body_digest).where(PublishedMessage.message_key == key))).scalar()
            if stored is None:
                inserted = await session.execute(
                    insert_ignoring_conflicts(session, PublishedMessage.__table__, ["message_key"]),  # type: ignore[arg-type]
                    {"message_key": key, "body_digest": body_digest, "form": form, "received_at": now})
                await session.commit()
                if inserted.rowcount == 1:  # type: ignore[attr-defined]
                    return Seen(first=True)
                stored = (await session.execute(
                    select(PublishedMessage.body_digest).where(PublishedMessage.message_key == key))).scalar_one()
            if stored != body_digest:
                return Seen(first=False, reused=True)
            return Seen(first=False, answers=await _answers(session, key))

    async def status(self, tenant: str, message_id: str) -> Status:
        key = inbox_key(tenant, message_id)
        async with self._sessions() as session:
            form = (await session.execute(
                select(PublishedMessage.form).where(PublishedMessage.message_key == key))).scalar()
            return Status(form=form, answers=await _answers(session, key))
