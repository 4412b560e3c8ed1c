"""One transaction for what concurrent requests write (a group commit).

A request hands its rows to `GroupCommit.write(kind, item)` and waits; the rows of every request
that came while the previous transaction was on its way, or while this one waited for the
database's write lock, go in together, each kind as one statement
(`GroupWrite.write` takes all of its items at once), and each request is answered once its rows are
on disk, or with what the database raised when they are not.

On SQLite every commit takes the file's one write lock, shared with the other services: a commit
per request held the gateway to the commits the lock could give it, and two kinds of request row
(a message's record, an answer's audit rows) each in a group of its own were two waits for the lock
where one does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

Item = TypeVar("Item", contravariant=True)
Result = TypeVar("Result", covariant=True)
T = TypeVar("T")
R = TypeVar("R")


class GroupWrite(Protocol[Item, Result]):
    async def write(self, session: AsyncSession, items: Sequence[Item]) -> Sequence[Result]:
        """Write every item in the open transaction; one result per item, in their order."""


@dataclass(frozen=True)
class _Waiting(Generic[T, R]):
    kind: GroupWrite[T, R]
    item: T
    answer: asyncio.Future[R]


def _retrieved(answer: asyncio.Future[Any]) -> None:
    if not answer.cancelled():
        answer.exception()  # the failure is the waiting request's to say; a request gone leaves no warning


class GroupCommit:
    MAX_ITEMS = 500

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._waiting: list[_Waiting[Any, Any]] = []
        self._writer: asyncio.Task[None] | None = None

    async def write(self, kind: GroupWrite[T, R], item: T) -> R:
        """Returns once the item is committed. A request that goes away leaves its item to be written."""
        answer: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        answer.add_done_callback(_retrieved)
        self._waiting.append(_Waiting(kind, item, answer))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_waiting(), name="group-commit")
        return await asyncio.shield(answer)

    async def _write_waiting(self) -> None:
        while self._waiting:
            batch: list[_Waiting[Any, Any]] = []
            try:
                async with self._sessions() as session, session.begin():
                    # the transaction (on SQLite, the write lock) first, then the rows: whatever came
                    # while the lock was awaited goes in with the rest
                    await session.connection()
                    batch, self._waiting = self._waiting[:self.MAX_ITEMS], self._waiting[self.MAX_ITEMS:]
                    kinds: dict[int, list[_Waiting[Any, Any]]] = {}
                    for waiting in batch:
                        kinds.setdefault(id(waiting.kind), []).append(waiting)
                    results = [(entries, await entries[0].kind.write(session, [w.item for w in entries]))
                               for entries in kinds.values()]
            except Exception as error:  # each request answers for itself
                if not batch:  # no transaction: what waits now is answered with why
                    batch, self._waiting = self._waiting[:self.MAX_ITEMS], self._waiting[self.MAX_ITEMS:]
                for waiting in batch:
                    if not waiting.answer.done():
                        waiting.answer.set_exception(error)
                continue
            for entries, answers in results:
                for waiting, answer in zip(entries, answers, strict=True):
                    if not waiting.answer.done():
                        waiting.answer.set_result(answer)
