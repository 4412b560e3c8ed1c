"""The one engine factory. SQLite gets WAL, synchronous=FULL, a busy timeout and BEGIN IMMEDIATE, so
three service processes can share one file without 'database is locked' surprises and a committed
transaction survives a power failure. PostgreSQL gets a bound on every statement and connection
attempt, so a database that stops answering is a fault the consumer sees, not a hang."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import aiosqlite
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.util import await_only

DEFAULT_STATEMENT_TIMEOUT_SECONDS = 15.0
READ_ONLY_OPTION = "rapport_read_only"
# `await session.connection(execution_options=READ_ONLY)` before a session's first statement: a
# transaction that only reads (on SQLite a deferred BEGIN; nothing changes on PostgreSQL). Writing
# in it may fail with 'database is locked' rather than wait: read only.
READ_ONLY = {READ_ONLY_OPTION: True}

# SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25, ... up to 100 ms between its tries, so a
# writer that finds the file's one write lock held by another service's commit (a few ms) often sleeps
# long past its release. A writer's BEGIN IMMEDIATE is tried every 0.5 to 4 ms instead (`rapport db
# bench-locks`: five processes committing 100 times a second each, the p99 wait for the lock 54-83 ms
# with SQLite's handler, 20-24 ms so).
LOCK_TRY_FIRST_SECONDS = 0.0005
LOCK_TRY_MOST_SECONDS = 0.004


def create_engine(url: str, *, statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT_SECONDS,
                  **kwargs: Any) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": statement_timeout}, **kwargs)
        _sqlite_for_several_processes(engine, statement_timeout)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_timeout", statement_timeout)
    # asyncpg: `timeout` bounds connecting, `command_timeout` every statement (client side, so it
    # also ends a wait on a connection that went silent)
    connect_args = {"timeout": statement_timeout, "command_timeout": statement_timeout,
                    **kwargs.pop("connect_args", {})}
    return create_async_engine(url, connect_args=connect_args, **kwargs)


def _sqlite_for_several_processes(engine: AsyncEngine, busy_seconds: float) -> None:
    # The documented pysqlite recipe: let SQLAlchemy emit BEGIN itself, and make it IMMEDIATE so
    # a writer takes the lock up front instead of failing on upgrade from a read lock.
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: in WAL mode, NORMAL may lose the last commits to a power failure; an acknowledged
        # submission must not be one of them
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_seconds * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Any) -> None:
        # a reader that asked for READ_ONLY takes no write lock: under WAL it reads the last commit
        # while a writer works, instead of queueing behind every writer of every service
        if connection.get_execution_options().get(READ_ONLY_OPTION):
            connection.exec_driver_sql("BEGIN")
            return
        driver = getattr(connection.connection.dbapi_connection, "_connection", None)
        if not isinstance(driver, aiosqlite.Connection):  # a plain pysqlite engine: SQLite's own wait
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            return
        try:  # in the connection's own thread, so the tries never block the event loop
            await_only(driver._execute(begin_immediate, driver._conn, busy_seconds))  # type: ignore[no-untyped-call]
        except sqlite3.OperationalError as error:  # as SQLAlchemy raises it, so the retry policy knows it
            raise sa_exc.OperationalError("BEGIN IMMEDIATE", None, error) from error


def begin_immediate(connection: sqlite3.Connection, wait_seconds: float) -> None:
    """BEGIN IMMEDIATE, tried every few milliseconds until `wait_seconds` have passed (then SQLite's
    'database is locked' is raised, as its own busy timeout would)."""
    connection.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + wait_seconds
        pause = LOCK_TRY_FIRST_SECONDS
        while True:
            try:
                connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                if error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 1.5, LOCK_TRY_MOST_SECONDS)
    finally:
        connection.execute(f"PRAGMA busy_timeout={int(wait_seconds * 1000)}")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def is_postgres(session_or_engine: AsyncSession | AsyncEngine) -> bool:
    bind = session_or_engine.bind if isinstance(session_or_engine, AsyncSession) else session_or_engine
    return bind is not None and bind.dialect.name == "postgresql"
