"""What an acknowledgement means here: the broker's sync policy and the database's, as configured
and as the database itself reports it."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from rapport.shared.settings import Settings

SQLITE_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def broker_policy(sync: str) -> str:
    return "fsync always" if sync == "always" else f"fsync every {sync}"


async def describe_durability(settings: Settings, engine: AsyncEngine) -> dict[str, str]:
    """`broker`: the sync policy set by RAPPORT_BROKER_SYNC (the embedded broker runs with it; an
    external broker is configured by its operator to match). `database`: read from the database."""
    return {"broker": broker_policy(settings.broker_sync), "database": await database_policy(engine)}


async def database_policy(engine: AsyncEngine) -> str:
    try:
        async with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                level = (await conn.execute(text("PRAGMA synchronous"))).scalar_one()
                return f"sqlite synchronous={SQLITE_SYNCHRONOUS.get(int(level), str(level))}"
            if engine.dialect.name == "postgresql":
                fsync = (await conn.execute(text("SHOW fsync"))).scalar_one()
                commit = (await conn.execute(text("SHOW synchronous_commit"))).scalar_one()
                return f"postgresql fsync={fsync} synchronous_commit={commit}"
    except Exception as error:  # readiness must still answer; say what could not be read
        return f"{engine.dialect.name}: not readable ({type(error).__name__})"
    return engine.dialect.name
