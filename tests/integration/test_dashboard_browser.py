"""The dashboard in a real browser (headless Chromium) against the real gateway: signing in through
a login link works once and never again; expired, tampered and foreign links leave the browser
signed out; a form posted without the session's CSRF token is refused; an admin reads the audit
trail and a clinician is told the page is not for their role. Screenshots of every page land under
test-output/browser/<test>/ (the path is printed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from browser_rig import Screens, assert_controls_labelled, chromium, output_dir
from dashboard_rig import gateway_settings, link, serving, signing_key
from test_sign_in_and_audit import tampered

from rapport.services.gateway.signin import COOKIE

pytestmark = [pytest.mark.nats, pytest.mark.browser]


@pytest_asyncio.fixture
async def sqlite_url(sqlite_databases: Any) -> str:
    url: str = await sqlite_databases.sqlite()
    return url


@pytest.fixture
def screens(request: pytest.FixtureRequest) -> Screens:
    return Screens(output_dir(request.node.name))


@pytest_asyncio.fixture
async def stack(sqlite_url: str, fresh_stream: str, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    key = signing_key(tmp_path)
    async with serving(gateway_settings(sqlite_url, key), fresh_stream) as base:
        yield base, key


async def cookies_of(context: Any) -> list[str]:
    return [c["name"] for c in await context.cookies()]


async def test_a_login_link_signs_the_browser_in_once(stack: tuple[str, Path], tenant: str, screens: Screens) -> None:
    base, key = stack
    url = link(base, key, tenant, "lead")
    async with chromium() as browser:
        first = await browser.new_context()  # type: ignore[attr-defined]
        page = await first.new_page()
        await page.goto(url)
        assert page.url == f"{base}/"
        assert await page.get_by_test_id("tenant").inner_text() == tenant
        assert await page.get_by_test_id("role").inner_text() == "lead"
        [cookie] = [c for c in await first.cookies() if c["name"] == COOKIE]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
        await screens.shoot(page, "signed-in-start-page")

        second = await browser.new_context()  # type: ignore[attr-defined]
        again = await second.new_page()
        answer = await again.goto(url)
        assert answer.status == 401
        await again.get_by_role("heading", name="This sign-in link cannot be used").wait_for()
        assert COOKIE not in await cookies_of(second)
        await screens.shoot(again, "link-used-twice")


async def test_expired_tampered_and_foreign_links_leave_the_browser_signed_out(
    stack: tuple[str, Path], tenant: str, screens: Screens, tmp_path: Path
) -> None:
    base, key = stack
    links = {
        "expired": link(base, key, tenant, "admin", now=datetime.now(UTC) - timedelta(minutes=30)),
        "tampered-tenant": tampered(link(base, key, tenant, "admin"), tenant="othertenant"),
        "tampered-role": tampered(link(base, key, tenant, "lead"), role="admin"),
        "another-stack": link(base, signing_key(tmp_path / "elsewhere"), tenant, "admin"),
    }
    async with chromium() as browser:
        for name, url in links.items():
            context = await browser.new_context()  # type: ignore[attr-defined]
            page = await context.new_page()
            answer = await page.goto(url)
            assert answer.status == 401, name
            assert COOKIE not in await cookies_of(context), name
            await screens.shoot(page, f"refused-{name}")
            start = await page.goto(f"{base}/")
            assert start.status == 401, name
            await page.get_by_role("heading", name="Sign in").wait_for()
            await context.close()


async def test_a_form_without_the_session_csrf_token_is_refused(
    stack: tuple[str, Path], tenant: str, screens: Screens
) -> None:
    base, key = stack
    async with chromium() as browser:
        context = await browser.new_context()  # type: ignore[attr-defined]
        page = await context.new_page()
        await page.goto(link(base, key, tenant, "admin"))
        # what a forged cross-site form would send: the cookie, not the token
        await page.eval_on_selector("form[action='/sign-out'] input[name=csrf_token]", "e => e.value = 'forged'")
        await page.get_by_role("button", name="Sign out").click()
        await page.get_by_role("heading", name="Not signed out").wait_for()
        await screens.shoot(page, "sign-out-without-csrf-token")
        assert COOKIE in await cookies_of(context)

        await page.goto(f"{base}/")
        assert await page.get_by_test_id("role").inner_text() == "admin"  # still signed in
        await page.get_by_role("button", name="Sign out").click()
        await page.get_by_role("heading", name="Signed out").wait_for()
        await screens.shoot(page, "signed-out")
        answer = await page.goto(f"{base}/audit")
        assert answer.status == 401


async def test_an_admin_reads_the_audit_trail_and_a_clinician_is_refused_it(
    stack: tuple[str, Path], tenant: str, screens: Screens
) -> None:
    base, key = stack
    async with chromium() as browser:
        clinician = await (await browser.new_context()).new_page()  # type: ignore[attr-defined]
        await clinician.goto(link(base, key, tenant, "clinician", clinician="clin-11"))
        refused = await clinician.goto(f"{base}/audit")
        assert refused.status == 403
        await clinician.get_by_role("heading", name="Not for your role").wait_for()
        await screens.shoot(clinician, "clinician-on-the-audit-page")

        admin = await (await browser.new_context()).new_page()  # type: ignore[attr-defined]
        await admin.goto(link(base, key, tenant, "admin"))
        await admin.get_by_role("navigation", name="Pages").get_by_role("link", name="Audit trail").click()
        await admin.get_by_role("heading", name="Audit trail").wait_for()
        table = admin.get_by_test_id("audit")
        rows = await table.locator("tbody tr").evaluate_all(
            "rows => rows.map(r => [r.dataset.action, r.dataset.outcome, r.cells[1].innerText])")
        assert ["sign_in", "303", "clin-11"] in rows
        assert ["read_audit", "403", "clin-11"] in rows
        assert ["sign_in", "303", f"admin@{tenant}"] in rows
        await assert_controls_labelled(admin)
        await screens.shoot(admin, "audit-trail")

        # the filters are labelled fields a keyboard reaches
        await admin.get_by_label("Who (subject)").fill("clin-11")
        await admin.get_by_label("Action").fill("sign_in")
        await admin.get_by_label("Action").press("Enter")
        await admin.wait_for_url("**/audit?*")
        rows = await table.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.action)")
        assert rows == ["sign_in"]
        await screens.shoot(admin, "audit-trail-filtered")
