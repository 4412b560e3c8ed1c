"""The gateway as `rapport serve gateway` runs it (uvicorn on loopback, lifespan, broker and
database), with a signing key of the test's own, and what the sign-in tests need around it: links,
tokens, an HTTP client that keeps cookies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from harness import serving, settings_for  # noqa: F401 (serving: for the tests that import it from here)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.gateway.dashboard import dashboard
from rapport.services.gateway.http import Gate, create_app
from rapport.services.gateway.signin import link_url, mint_link
from rapport.services.gateway.tokens import SigningKeyVerifier, create_signing_key, load_signing_key, mint
from rapport.shared.settings import Settings


def signing_key(folder: Path) -> Path:
    path = folder / "token-signing-key.pem"
    create_signing_key(path)
    return path


def gateway_settings(database_url: str, key_file: Path, **overrides: Any) -> Settings:
    return settings_for(database_url, **{"token_key_file": key_file, "gateway_answer_wait_seconds": 5.0, **overrides})


def link(base: str, key_file: Path, tenant: str, role: str, *, now: datetime | None = None,
         ttl: timedelta = timedelta(minutes=10), **claims: Any) -> str:
    token = mint_link(load_signing_key(key_file), tenant=tenant, role=role, audience="rapport",
                      now=now or datetime.now(UTC), ttl=ttl, **claims)
    return link_url(base, token)


def bearer(key_file: Path, tenant: str, role: str, **claims: Any) -> str:
    return mint(load_signing_key(key_file), tenant=tenant, role=role, audience="rapport", now=datetime.now(UTC),
                ttl=timedelta(hours=1), **claims)


def dashboard_app(sessions: async_sessionmaker[AsyncSession], key_file: Path, database_url: str) -> FastAPI:
    """The dashboard's pages and APIs in this process (no broker, no uvicorn): for tests of what the
    read model, sign-in and audit answer."""
    gate = Gate(SigningKeyVerifier(load_signing_key(key_file).public_key(), audience="rapport"), lambda: 1 << 20)
    pages = dashboard(Settings(token_key_file=key_file, database_url=database_url), sessions, gate,
                      clock=lambda: datetime.now(UTC))
    return create_app(None, gate, version="test", wait_seconds=1.0, routers=pages.routers)  # type: ignore[arg-type]
