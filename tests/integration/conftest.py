"""Services running in this process against the real NATS JetStream and a real database."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio
from nats.js.errors import NotFoundError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.gateway.tokens import create_signing_key
from rapport.shared.db.engine import create_engine, session_factory
from rapport.shared.messaging.subjects import STREAM_SUBJECTS

pytestmark = pytest.mark.nats


@pytest_asyncio.fixture
async def fresh_stream(nats_url: str) -> AsyncIterator[str]:
    """Each test starts with none of Rapport's streams and no durable consumers: nothing left from another test."""
    client = await nats.connect(nats_url)
    try:
        for stream in STREAM_SUBJECTS:
            with contextlib.suppress(NotFoundError):
                await client.jetstream().delete_stream(stream)
        yield nats_url
    finally:
        await client.close()


@pytest_asyncio.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the test's fresh database (SQLite and PostgreSQL), for calling a handler directly."""
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """The gateway's token signing key, the test's own."""
    path = tmp_path / "token-signing-key.pem"
    assert create_signing_key(path)
    return path
