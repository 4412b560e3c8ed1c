"""An admin ends another person's dashboard session by hand (/admin/sessions), on SQLite and
PostgreSQL, over the real gateway app and its sign-in, with two tenants and each role signed in by
a login link: the admin sees their tenant's live sessions (who, role, since when, how they signed
in) and never a session id or its hash; "End session" signs that browser out at once, without
scripts (303) and in place (htmx); a form without the CSRF token changes nothing; a clinician and a
lead may neither list nor end; another tenant's admin is answered 404 and the session goes on. Each
list and each end is in the audit trail, of the tenant whose admin did it."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from dashboard_rig import bearer, dashboard_app, link, signing_key
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.gateway.signin import COOKIE


class Browser:
    """One person's browser on the gateway: its own cookies, the session's CSRF token."""

    def __init__(self, transport: httpx.ASGITransport) -> None:
        self.http = httpx.AsyncClient(transport=transport, base_url="http://gateway", follow_redirects=False)
        self.csrf = ""

    async def sign_in(self, key: Path, tenant: str, role: str, **claims: Any) -> Browser:
        opened = await self.http.get(link("http://gateway", key, tenant, role, **claims).removeprefix("http://gateway"))
        assert opened.status_code == 303, opened.text
        page = await self.http.get("/")
        assert page.status_code == 200
        self.csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        return self

    async def signed_in(self) -> bool:
        answer = await self.http.get("/")
        assert answer.status_code in (200, 401)
        return answer.status_code == 200

    async def end(self, handle: str, *, in_place: bool = False, csrf: str | None = None) -> httpx.Response:
        token = self.csrf if csrf is None else csrf
        if in_place:
            return await self.http.post(f"/admin/sessions/{handle}/end",
                                        headers={"HX-Request": "true", "X-CSRF-Token": token})
        return await self.http.post(f"/admin/sessions/{handle}/end", data={"csrf_token": token})


@pytest_asyncio.fixture
async def gateway(sessions: async_sessionmaker[AsyncSession], tmp_path: Path,
                  database_url: str) -> AsyncIterator[tuple[httpx.ASGITransport, Path]]:
    key = signing_key(tmp_path)
    app = dashboard_app(sessions, key, database_url)
    yield httpx.ASGITransport(app=app), key


def listed(page: str) -> dict[str, tuple[str, str]]:
    """The sessions the page lists: subject -> (role, handle)."""
    rows = re.findall(r'data-session="([^"]+)" data-subject="([^"]+)" data-role="([^"]+)"', page)
    return {subject: (role, handle) for handle, subject, role in rows}


async def test_an_admin_ends_another_persons_session_and_only_their_own_tenants(
    gateway: tuple[httpx.ASGITransport, Path], tenant: str
) -> None:
    transport, key = gateway
    other = f"{tenant}b"
    admin = await Browser(transport).sign_in(key, tenant, "admin")
    therapist = await Browser(transport).sign_in(key, tenant, "clinician", clinician="clin-a")
    lead = await Browser(transport).sign_in(key, tenant, "lead")
    their_admin = await Browser(transport).sign_in(key, other, "admin")

    page = await admin.http.get("/admin/sessions")
    assert page.status_code == 200
    shown = listed(page.text)
    assert {s: r for s, (r, _h) in shown.items()} == {
        f"admin@{tenant}": "admin", "clin-a": "clinician", f"lead@{tenant}": "lead"}
    assert "login link" in page.text and "(you)" in page.text
    for browser in (admin, therapist, lead):  # never the session id, nor its hash
        session_id = browser.http.cookies[COOKIE]
        assert session_id not in page.text and hashlib.sha256(session_id.encode()).hexdigest() not in page.text
    therapist_handle, lead_handle = shown["clin-a"][1], shown[f"lead@{tenant}"][1]
    assert listed((await their_admin.http.get("/admin/sessions")).text).keys() == {f"admin@{other}"}

    # a clinician and a lead may neither list nor end; neither ends anything
    for browser in (therapist, lead):
        assert (await browser.http.get("/admin/sessions")).status_code == 403
        assert (await browser.end(shown[f"admin@{tenant}"][1])).status_code == 403
    # another tenant's admin: not found, and the therapist is still signed in
    foreign = await their_admin.end(therapist_handle)
    assert foreign.status_code == 404 and "No such session" in foreign.text
    assert await therapist.signed_in() and await admin.signed_in()
    # without the session's CSRF token nothing happens
    assert (await admin.end(therapist_handle, csrf="0" * 64)).status_code == 403
    assert await therapist.signed_in()

    ended = await admin.end(therapist_handle)  # without scripts
    assert (ended.status_code, ended.headers["location"]) == (303, "/admin/sessions")
    assert not await therapist.signed_in()
    in_place = await admin.end(lead_handle, in_place=True)
    assert in_place.status_code == 200 and 'data-gone="true"' in in_place.text
    assert f"Ended: lead@{tenant} (lead) is signed out." in in_place.text
    assert not await lead.signed_in() and await admin.signed_in() and await their_admin.signed_in()
    assert (await admin.end(lead_handle)).status_code == 404  # ended already
    assert listed((await admin.http.get("/admin/sessions")).text).keys() == {f"admin@{tenant}"}

    async def ends(tenant_id: str) -> list[tuple[str, int, str | None, str | None]]:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as api:
            rows = (await api.get("/api/v1/audit", params={"action": "end_session"}, headers={
                "Authorization": f"Bearer {bearer(key, tenant_id, 'admin')}"})).json()["entries"]
        return [(r["role"], r["outcome"], r["resource"], r["detail"]) for r in reversed(rows)]
    assert await ends(tenant) == [
        ("clinician", 403, None, "forbidden"), ("lead", 403, None, "forbidden"), ("admin", 403, None, "csrf"),
        ("admin", 200, f"session/{therapist_handle}", "clinician clin-a"),
        ("admin", 200, f"session/{lead_handle}", f"lead lead@{tenant}"),
        ("admin", 404, f"session/{lead_handle}", None)]
    assert await ends(other) == [("admin", 404, f"session/{therapist_handle}", None)]
    for browser in (admin, therapist, lead, their_admin):
        await browser.http.aclose()


async def test_a_name_that_is_not_a_handle_is_not_found(gateway: tuple[httpx.ASGITransport, Path], tenant: str) -> None:
    transport, key = gateway
    admin = await Browser(transport).sign_in(key, tenant, "admin")
    assert (await admin.end("x" * 40)).status_code == 404
    assert (await admin.end("no.such")).status_code == 404
    assert await admin.signed_in()
    await admin.http.aclose()
