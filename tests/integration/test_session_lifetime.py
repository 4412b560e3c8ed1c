"""A dashboard session's lifetime on the gateway's own clock (the app in process, on SQLite): a
session lasts its twelve hours and not a minute more; a link signs in within its ten minutes and
not after; signing in again replaces the browser's old session; expired sessions and used links
are pruned once they can no longer be used."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from dashboard_rig import link, signing_key
from sqlalchemy import func, select

from rapport.services.gateway.dashboard import dashboard
from rapport.services.gateway.http import Gate, create_app
from rapport.services.gateway.signin import DashboardSession, SignInLink
from rapport.services.gateway.tokens import SigningKeyVerifier, load_signing_key
from rapport.shared.db.engine import create_engine, session_factory
from rapport.shared.settings import Settings


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def rows(sessions: Any, table: Any) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.count()).select_from(table))).scalar_one())


async def test_a_session_lasts_twelve_hours_and_what_can_no_longer_be_used_is_pruned(
    sqlite_databases: Any, tmp_path: Path
) -> None:
    url = await sqlite_databases.sqlite()
    key = signing_key(tmp_path)
    clock = Clock(datetime.now(UTC))
    engine = create_engine(url)
    sessions = session_factory(engine)
    gate = Gate(SigningKeyVerifier(load_signing_key(key).public_key(), audience="rapport"), lambda: 1 << 20)
    pages = dashboard(Settings(token_key_file=key, database_url=url), sessions, gate, clock=clock)
    app = create_app(None, gate, version="test", wait_seconds=1.0, routers=pages.routers)  # type: ignore[arg-type]
    base = "http://gateway.test"
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base) as http:
            url_now = link(base, key, "acme", "lead", now=clock.now)
            assert (await http.get(url_now.removeprefix(base))).status_code == 303
            clock.now += timedelta(hours=11, minutes=59)
            assert (await http.get("/")).status_code == 200
            clock.now += timedelta(minutes=2)
            assert (await http.get("/")).status_code == 401

            late = link(base, key, "acme", "lead", now=clock.now - timedelta(minutes=11))
            assert (await http.get(late.removeprefix(base))).status_code == 401
            in_time = link(base, key, "acme", "admin", now=clock.now - timedelta(minutes=9))
            assert (await http.get(in_time.removeprefix(base))).status_code == 303
            rows_now = (await http.get("/api/v1/audit")).json()["entries"]
            assert [(r["outcome"], r["detail"]) for r in rows_now if r["action"] == "sign_in"][:2] == [
                (303, None), (401, "link_expired")]
        # signing in again replaced the browser's expired session; both links are kept until they expire
        assert await rows(sessions, DashboardSession) == 1 and await rows(sessions, SignInLink) == 2
        await pages.sign_in.prune()  # the lead's link is past use; the admin's is not
        assert await rows(sessions, DashboardSession) == 1 and await rows(sessions, SignInLink) == 1
        clock.now += timedelta(hours=13)
        await pages.sign_in.prune()
        assert await rows(sessions, DashboardSession) == 0 and await rows(sessions, SignInLink) == 0
    finally:
        await engine.dispose()
