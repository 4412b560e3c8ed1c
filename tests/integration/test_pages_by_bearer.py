"""Every dashboard page answers a bearer token as it answers a session (the same principal, the
gateway's one sign-in): a page that named its tenant from the session alone failed with 500 for a
token. Each role's pages with its own token are 200 and name the token's tenant; another role's are
403; no token is 401."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from dashboard_rig import bearer, dashboard_app, signing_key
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

PAGES = {
    "lead": ["/", "/lead"],
    "admin": ["/", "/admin", "/admin/webhooks", "/admin/instruments", "/admin/sessions", "/audit"],
    "clinician": ["/"],
}


@pytest_asyncio.fixture
async def gateway(sessions: async_sessionmaker[AsyncSession], tmp_path: Path,
                  database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    key = signing_key(tmp_path)
    app = dashboard_app(sessions, key, database_url)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        yield http, key


@pytest.mark.parametrize("role", sorted(PAGES))
async def test_each_roles_pages_answer_its_bearer_token_naming_its_tenant(
        gateway: tuple[httpx.AsyncClient, Path], tenant: str, role: str) -> None:
    http, key = gateway
    claims = {"clinician": "clin-a"} if role == "clinician" else {}
    token = {"Authorization": f"Bearer {bearer(key, tenant, role, **claims)}"}
    for path in PAGES[role]:
        page = await http.get(path, headers=token)
        assert page.status_code == 200, (path, page.status_code, page.text[:300])
        if path != "/" or role != "clinician":
            assert f"{tenant}" in page.text, path
    for other, paths in PAGES.items():
        for path in set(paths) - set(PAGES[role]):
            refused = await http.get(path, headers=token)
            assert refused.status_code == 403, (role, other, path, refused.status_code)
    assert (await http.get(PAGES[role][-1])).status_code == 401
