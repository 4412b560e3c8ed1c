"""The gateway's answers on disk: written by the projection, read when a request's answer will not
come again (a resend of a message already answered)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.gateway.answers import Answer, complete
from rapport.services.gateway.models import StoredAnswer
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
    await session.execute(delete(StoredAnswer).where(StoredAnswer.answered_at < before))


class StoredAnswers:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def complete(self, tenant: str, message_id: str) -> list[Answer] | None:
        """Every part's answer to the message, or None while any is missing."""
        async with self._sessions() as session:
            rows = (await session.execute(
                select(StoredAnswer.answer).where(StoredAnswer.message_key == inbox_key(tenant, message_id))
            )).scalars().all()
        answers = {a.part: a for a in map(Answer.from_stored, rows)}
        return complete(answers)
