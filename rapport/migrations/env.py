"""One migration history for every service's tables, on SQLite and PostgreSQL alike.

Batch mode everywhere (SQLite has almost no ALTER; on PostgreSQL batch blocks are plain ALTERs).
When `rapport db upgrade` passes a connection in, it is used (the cookbook's connection sharing);
otherwise the URL comes from the same settings the services read."""

from __future__ import annotations

import asyncio
from typing import Literal

from alembic import context
from sqlalchemy.engine import Connection

import rapport.services.alerts.models
import rapport.services.gateway.audit
import rapport.services.gateway.models
import rapport.services.gateway.notifications.models
import rapport.services.gateway.signin
import rapport.services.ingest.models
import rapport.services.scoring.models  # noqa: F401  (the four imports register every table)
from rapport.shared.db.base import Base, UtcDateTime
from rapport.shared.db.engine import create_engine
from rapport.shared.settings import Settings

target_metadata = Base.metadata


def render_item(type_: str, obj: object, autogen_context: object) -> str | Literal[False]:
    # Migrations name plain SQLAlchemy types, so they never import application code.
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_with(connection: Connection) -> None:
    context.configure(
        connection=connection, target_metadata=target_metadata, render_as_batch=True, compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_online() -> None:
    url = Settings().database_url
    if not url:
        raise SystemExit("alembic on its own migrates RAPPORT_DATABASE_URL: set it (`rapport db upgrade` also "
                         "migrates the embedded SQLite files)")
    engine = create_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(run_with)
        await connection.commit()
    await engine.dispose()


shared_connection = context.config.attributes.get("connection")
if shared_connection is not None:
    run_with(shared_connection)
else:
    asyncio.run(run_online())
