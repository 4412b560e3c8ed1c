"""The gateway's group commit (shared/db/group_commit.py) on SQLite and PostgreSQL: the records of
messages and the audit rows of the requests waiting at one moment go in as one transaction; each
request learns its own outcome (which of two racing records was first; the database's error when
the group failed, and then nothing of the group is stored); a request that goes away still has its
rows written. Ids at their longest: the message keys are 64-character digests, the audit resource
its 300 characters."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.gateway.audit import AUDIT_ROWS, AuditRow
from rapport.services.gateway.models import PublishedMessage
from rapport.services.gateway.repository import MESSAGE_RECORDS
from rapport.shared.db.delivery import inbox_key
from rapport.shared.db.engine import create_engine, session_factory
from rapport.shared.db.group_commit import GroupCommit

NOW = datetime(2026, 12, 3, 9, tzinfo=UTC)


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[tuple[async_sessionmaker[AsyncSession], list[int]]]:
    engine = create_engine(database_url)
    commits: list[int] = []
    event.listen(engine.sync_engine, "commit", lambda _connection: commits.append(1))
    yield session_factory(engine), commits
    await engine.dispose()


def record(tenant: str, n: int) -> dict[str, Any]:
    return {"message_key": inbox_key(tenant, f"http-body:{n:040d}"), "body_digest": "d" * 64, "form": "native",
            "received_at": NOW}


def audit_rows(tenant: str, n: int) -> list[dict[str, Any]]:
    return [{"at": NOW, "tenant": tenant, "subject": "integration-engine", "role": "integration", "clinician": None,
             "action": "submit", "client_address": "127.0.0.1", "credential": "bearer", "outcome": 201,
             "resource": f"submission/{n:04d}" + "s" * 284, "detail": "accepted"}]


async def counts(sessions: async_sessionmaker[AsyncSession]) -> tuple[int, int]:
    async with sessions() as session:
        records = (await session.execute(select(func.count()).select_from(PublishedMessage))).scalar_one()
        rows = (await session.execute(select(func.count()).select_from(AuditRow))).scalar_one()
    return records, rows


async def test_the_records_and_audit_rows_of_requests_waiting_together_are_one_transaction(
        sessions: tuple[async_sessionmaker[AsyncSession], list[int]], tenant: str) -> None:
    factory, commits = sessions
    writes = GroupCommit(factory)
    answers = await asyncio.gather(*(writes.write(MESSAGE_RECORDS, record(tenant, n)) for n in range(10)),
                                   *(writes.write(AUDIT_ROWS, audit_rows(tenant, n)) for n in range(10)))
    assert answers == [True] * 10 + [None] * 10
    assert len(commits) == 1
    assert await counts(factory) == (10, 10)


async def test_of_two_requests_with_one_message_id_only_the_first_is_the_record(
        sessions: tuple[async_sessionmaker[AsyncSession], list[int]], tenant: str) -> None:
    factory, _ = sessions
    writes = GroupCommit(factory)
    assert await writes.write(MESSAGE_RECORDS, record(tenant, 1)) is True
    together = await asyncio.gather(writes.write(MESSAGE_RECORDS, record(tenant, 2)),
                                    writes.write(MESSAGE_RECORDS, record(tenant, 2)),
                                    writes.write(MESSAGE_RECORDS, record(tenant, 1)))
    assert together == [True, False, False]  # racing in one group; already recorded by an earlier one
    assert await counts(factory) == (2, 0)


class Refusing:
    """A kind whose statement the database refuses (a row with no `at`, which the table requires)."""

    async def write(self, session: AsyncSession, items: Sequence[None]) -> list[None]:
        await session.execute(AuditRow.__table__.insert(), [{"action": "submit", "outcome": 201}])
        return [None for _ in items]


async def test_a_group_the_database_refuses_answers_every_request_with_the_error_and_stores_none_of_it(
        sessions: tuple[async_sessionmaker[AsyncSession], list[int]], tenant: str) -> None:
    factory, _ = sessions
    writes = GroupCommit(factory)
    answers = await asyncio.gather(writes.write(MESSAGE_RECORDS, record(tenant, 1)),
                                   writes.write(AUDIT_ROWS, audit_rows(tenant, 1)),
                                   writes.write(Refusing(), None), return_exceptions=True)
    assert all(isinstance(a, Exception) and "at" in str(a).lower() for a in answers), answers
    assert await counts(factory) == (0, 0)
    assert await writes.write(MESSAGE_RECORDS, record(tenant, 1)) is True  # the next group is written
    assert await counts(factory) == (1, 0)


async def test_a_request_that_goes_away_while_waiting_still_has_its_rows_written(
        sessions: tuple[async_sessionmaker[AsyncSession], list[int]], tenant: str) -> None:
    factory, _ = sessions
    writes = GroupCommit(factory)
    leaving = asyncio.create_task(writes.write(AUDIT_ROWS, audit_rows(tenant, 1)))
    staying = asyncio.create_task(writes.write(AUDIT_ROWS, audit_rows(tenant, 2)))
    await asyncio.sleep(0)  # both are waiting for the group's transaction
    leaving.cancel()
    await staying
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert await counts(factory) == (0, 2)


async def test_on_sqlite_a_request_that_comes_while_the_write_lock_is_awaited_goes_in_the_same_transaction(
        sqlite_databases: Any, tenant: str) -> None:
    url = await sqlite_databases.sqlite()
    engine = create_engine(url)
    commits: list[int] = []
    trying = asyncio.Event()
    event.listen(engine.sync_engine, "commit", lambda _connection: commits.append(1))
    event.listen(engine.sync_engine, "engine_connect", lambda _connection: trying.set())  # then BEGIN IMMEDIATE
    other_service = sqlite3.connect(url.split("///", 1)[1], isolation_level=None)
    try:
        other_service.execute("BEGIN IMMEDIATE")  # another service holds the file's one write lock
        writes = GroupCommit(session_factory(engine))
        first = asyncio.ensure_future(writes.write(MESSAGE_RECORDS, record(tenant, 1)))
        await trying.wait()  # the group commit is beginning its transaction, with the first request's row
        second = asyncio.ensure_future(writes.write(AUDIT_ROWS, audit_rows(tenant, 2)))
        await asyncio.sleep(0)  # a yield, not a wait: the second request hands in its row
        other_service.execute("ROLLBACK")
        assert await asyncio.gather(first, second) == [True, None]
        assert len(commits) == 1, "the row handed in while the lock was awaited went in with the first"
        assert await counts(session_factory(engine)) == (1, 1)
    finally:
        other_service.close()
        await engine.dispose()
