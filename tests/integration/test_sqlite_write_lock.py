"""A writer's wait for an SQLite file's one write lock (shared/db/engine.py): BEGIN IMMEDIATE tried
every few milliseconds in the connection's own thread, not SQLite's sleeps of up to 100 ms, and the
file's busy timeout as it was once the transaction has begun. On a real SQLite file, with the lock
held by another connection as another service's commit holds it."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from rapport.shared.db.engine import create_engine
from rapport.shared.messaging.retry import is_transient


@pytest.fixture
async def file(tmp_path: Path) -> AsyncIterator[Path]:
    path = tmp_path / "locks.db"
    with sqlite3.connect(path) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE t (v INTEGER)")
    yield path


async def busy_timeout(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("PRAGMA busy_timeout"))).scalar_one())


async def test_a_writer_waits_for_the_lock_and_commits_once_the_holder_lets_go(file: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{file}", statement_timeout=10.0, pool_size=1, max_overflow=0)
    holder = sqlite3.connect(file, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    try:
        async def write() -> None:
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO t (v) VALUES (1)"))

        writing = asyncio.create_task(write())
        done, _ = await asyncio.wait({writing}, timeout=0.2)
        assert not done, "the write began while another connection held the lock"
        holder.execute("COMMIT")
        await writing
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1
        assert await busy_timeout(engine) == 10_000  # the tries' timeout of 0 did not stay on the connection
    finally:
        holder.close()
        await engine.dispose()


async def test_a_lock_held_past_the_statement_timeout_is_database_is_locked_and_the_loop_stays_free(
        file: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{file}", statement_timeout=0.5, pool_size=1, max_overflow=0)
    holder = sqlite3.connect(file, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def tick() -> None:  # the event loop keeps running while the writer tries
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(tick())
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked") as raised:
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO t (v) VALUES (1)"))
        assert is_transient(raised.value)  # a consumer retries the batch, as it did with SQLite's own wait
        assert time.monotonic() - started >= 0.5
        assert ticks >= 10
        holder.execute("ROLLBACK")
        assert await busy_timeout(engine) == 500
        async with engine.begin() as connection:  # the connection is usable afterwards
            await connection.execute(text("INSERT INTO t (v) VALUES (2)"))
    finally:
        ticking.cancel()
        holder.close()
        await engine.dispose()
