"""The clinical lead's dashboard and the admin's pages in a real browser (headless Chromium), on the
real gateway app and its sign-in over a SQLite read model seeded by the projection's own functions
(lead_cohort.py): a lead signs in by a login link and sees the tenant's figures, the same numbers
`/api/v1/figures` gives, filters them by period and clinician with the page's GET form and follows a
figure to the alerts behind it; a clinician is refused the page and the API; an admin sees the
webhook endpoints with their delivery attempts and the instruments the tenant may use. Screenshots
under test-output/browser/<test>/. Synthetic people, pseudonymous ids."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import uvicorn
from browser_rig import Screens, assert_controls_labelled, chromium, output_dir
from dashboard_rig import link, signing_key
from lead_cohort import SINCE, UNTIL, seed
from sqlalchemy import update

from rapport.embedded_nats import free_port
from rapport.services.gateway.dashboard import dashboard
from rapport.services.gateway.http import Gate, create_app
from rapport.services.gateway.notifications.domain import NewDelivery, new_secret
from rapport.services.gateway.notifications.models import Delivery, DeliveryAttempt, WebhookEndpoint
from rapport.services.gateway.notifications.repository import add_target, queue
from rapport.services.gateway.tokens import SigningKeyVerifier, load_signing_key
from rapport.shared.db.engine import create_engine, session_factory
from rapport.shared.settings import Settings

pytestmark = pytest.mark.browser

NOW = datetime(2026, 11, 10, 12, tzinfo=UTC)


async def seed_webhooks(sessions: Any, tenant: str) -> None:
    """One team endpoint with a delivery tried twice (a 503, then delivered) and one that died after a 500,
    and one for clin-a never tried."""
    async with sessions() as session, session.begin():
        await add_target(session, WebhookEndpoint(
            id="00000000-0000-4000-8000-000000000001", tenant=tenant, clinician_id=None,
            url="https://hooks.example.test/rapport", description="team channel", secret=new_secret(),
            created_at=NOW - timedelta(days=30), created_by=f"admin@{tenant}"))
        await add_target(session, WebhookEndpoint(
            id="00000000-0000-4000-8000-000000000002", tenant=tenant, clinician_id="clin-a",
            url="https://clin-a.example.test/hook", description="", secret=new_secret(),
            created_at=NOW - timedelta(days=3), created_by=f"admin@{tenant}"))
        await queue(session, [NewDelivery(id="00000000-0000-4000-8000-0000000000d1", tenant=tenant, channel="webhook",
                                          target_id="00000000-0000-4000-8000-000000000001", event_id="ev-b1",
                                          alert_id="b1", payload=b"{}")], NOW)
        await queue(session, [NewDelivery(id="00000000-0000-4000-8000-0000000000d2", tenant=tenant, channel="webhook",
                                          target_id="00000000-0000-4000-8000-000000000001", event_id="ev-a3",
                                          alert_id="a3", payload=b"{}")], NOW - timedelta(hours=1))
        await session.execute(update(Delivery).where(Delivery.id == "00000000-0000-4000-8000-0000000000d2")
                              .values(status="dead", attempts=1, next_attempt_at=None, finished_at=NOW))
        session.add(DeliveryAttempt(
            delivery_id="00000000-0000-4000-8000-0000000000d2", attempt=1, tenant=tenant,
            target_id="00000000-0000-4000-8000-000000000001", attempted_at=NOW - timedelta(minutes=30),
            duration_ms=35, status_code=500, error=None, outcome="dead", next_attempt_at=None))
        for attempt, status, outcome in ((1, 503, "retried"), (2, 200, "delivered")):
            session.add(DeliveryAttempt(
                delivery_id="00000000-0000-4000-8000-0000000000d1", attempt=attempt, tenant=tenant,
                target_id="00000000-0000-4000-8000-000000000001", attempted_at=NOW + timedelta(minutes=attempt),
                duration_ms=40, status_code=status, error=None, outcome=outcome,
                next_attempt_at=NOW + timedelta(minutes=5) if outcome == "retried" else None))


@pytest_asyncio.fixture
async def served(sqlite_databases: Any, tmp_path: Path, tenant: str) -> AsyncIterator[tuple[str, Path]]:
    url: str = await sqlite_databases.sqlite()
    key = signing_key(tmp_path)
    engine = create_engine(url)
    sessions = session_factory(engine)
    await seed(sessions, tenant, f"{tenant}x")
    await seed_webhooks(sessions, tenant)
    gate = Gate(SigningKeyVerifier(load_signing_key(key).public_key(), audience="rapport"), lambda: 1 << 20)
    settings = Settings(token_key_file=key, database_url=url, licensed_instruments=f"{tenant}:ors,nosuch")
    pages = dashboard(settings, sessions, gate, clock=lambda: datetime.now(UTC))
    app = create_app(None, gate, version="test", wait_seconds=1.0, routers=pages.routers)  # type: ignore[arg-type]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None,
                                           access_log=False, lifespan="off", timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            pytest.fail("the gateway did not start")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}", key
    finally:
        server.should_exit = True
        await task
        await engine.dispose()


@pytest.fixture
def screens(request: pytest.FixtureRequest) -> Screens:
    return Screens(output_dir(request.node.name))


async def figures_on(page: Any) -> dict[str, Any]:
    """The numbers the page shows, read from the page."""
    async def text(selector: str) -> str:
        return str(await page.locator(selector).first.inner_text())

    kinds = await page.locator("[data-testid=open-by-kind] tr[data-kind]").evaluate_all(
        "rows => rows.map(r => [r.dataset.kind, Number(r.cells[1].textContent)])")
    clinicians = await page.locator("[data-testid=open-by-clinician] tr[data-clinician]").evaluate_all(
        "rows => rows.map(r => [r.dataset.clinician, Number(r.cells[1].textContent)])")
    times = await page.locator("[data-testid=time-to-acknowledge] tr[data-clinician]").evaluate_all(
        "rows => rows.map(r => [r.dataset.clinician, Number(r.cells[1].textContent), "
        "r.dataset.medianSeconds === '' ? null : Number(r.dataset.medianSeconds), "
        "r.dataset.p90Seconds === '' ? null : Number(r.dataset.p90Seconds)])")
    return {
        "open": int(await text("[data-figure=open-total] strong")),
        "by_kind": dict(kinds), "by_clinician": dict(clinicians),
        "times": {c: (n, m, p) for c, n, m, p in times},
        "not_on_track": await text("[data-figure=not-on-track]"),
        "ruptures": (int(await text("[data-figure=ruptures-raised] strong")),
                     int(await text("[data-figure=ruptures-repaired] strong"))),
        "tt": (int(await text("[data-figure=tt-episodes]")), await text("[data-figure=tt-recovered]"),
               await text("[data-figure=tt-improved]"), await text("[data-figure=tt-ended]"),
               int(await text("[data-figure=tt-too-few]")), int(await text("[data-figure=tt-unpaired]"))),
        "endings": dict(await page.locator("[data-testid=endings-by-clinician] tr[data-clinician]").evaluate_all(
            "rows => rows.map(r => [r.dataset.clinician, [Number(r.dataset.ended), Number(r.dataset.unplanned), "
            "r.cells[2].textContent.trim()]])")),
    }


def figures_of(api: dict[str, Any]) -> dict[str, Any]:
    """The same numbers from the API's answer, as the page words them."""
    o, t, n, r, tt = (api[k] for k in ("open_alerts", "time_to_acknowledge", "not_on_track", "ruptures",
                                       "talking_therapies"))

    def percent(share: float | None) -> str:
        return "no episodes" if share is None else f"{share * 100:.0f}%"
    return {
        "open": o["total"], "by_kind": {row["kind"]: row["count"] for row in o["by_kind"]},
        "by_clinician": {row["clinician"]: row["count"] for row in o["by_clinician"]},
        "times": {row["clinician"]: (row["acknowledged"], row["median_seconds"], row["p90_seconds"])
                  for row in [*t["by_clinician"], t["all"]]},
        "not_on_track": f"{n['not_on_track']} of {n['active_episodes']} episodes ({percent(n['share'])})",
        "ruptures": (r["raised"], r["repaired"]),
        "tt": (tt["finished"], f"{tt['recovered']} ({percent(tt['recovery_rate'])})",
               f"{tt['reliable_improvement']} ({percent(tt['reliable_improvement_rate'])})",
               f"{tt['ended']} ({tt['planned']} planned, {tt['unplanned']} unplanned)",
               tt["fewer_than_two_contacts"], tt["unpaired"]),
        "endings": {row["clinician"]: [row["ended"], row["unplanned"],
                                       f"{row['unplanned']} ({percent(row['dropout_rate'])})"]
                    for row in ([*tt["by_clinician"], {**tt, "clinician": "all"}] if tt["ended"] else [])},
    }


async def test_a_lead_sees_the_tenants_figures_as_the_api_gives_them_and_follows_one_to_its_alerts(
    served: tuple[str, Path], tenant: str, screens: Screens
) -> None:
    base, key = served
    async with chromium() as browser:
        context = await browser.new_context(viewport={"width": 1100, "height": 900})  # type: ignore[attr-defined]
        page = await context.new_page()
        await page.goto(link(base, key, tenant, "lead"))
        await page.get_by_role("heading", name="Clinical lead dashboard").wait_for()
        assert page.url == f"{base}/"
        everything = await (await context.request.get(f"{base}/api/v1/figures")).json()  # the session's cookie
        assert everything["tenant"] == tenant
        assert await figures_on(page) == figures_of(everything)
        await assert_controls_labelled(page)
        await screens.shoot(page, "lead-all-time")

        # the filters are a GET form: November, then one clinician
        await page.get_by_label("From (day)").fill(SINCE)
        await page.get_by_label("To (day, included)").fill(UNTIL)
        await page.get_by_role("button", name="Show figures").click()
        await page.wait_for_url(f"**/?clinician=&since={SINCE}&until={UNTIL}")
        november = await (await context.request.get(f"{base}/api/v1/figures?since={SINCE}&until={UNTIL}")).json()
        shown = await figures_on(page)
        assert shown == figures_of(november)
        assert shown["times"]["clin-a"] == (4, 9000, 13320)  # 1, 2, 3, 4 hours: median 2.5 h, p90 3.7 h
        assert shown["not_on_track"] == "2 of 5 episodes (40%)"
        basis = await page.locator("[data-testid=talking-therapies] .basis").inner_text()
        assert "ended in the period" in basis and "finished course of treatment" in basis
        assert shown["tt"][:4] == (2, "1 (100%)", "1 (50%)", "4 (2 planned, 2 unplanned)")
        assert shown["endings"]["clin-a"] == [2, 1, "1 (50%)"]  # dropout by clinician
        await screens.shoot(page, "lead-november")

        await page.get_by_label("Clinician").select_option("clin-b")
        await page.get_by_role("button", name="Show figures").click()
        await page.wait_for_url("**/?clinician=clin-b*")
        theirs = await (await context.request.get(
            f"{base}/api/v1/figures?clinician=clin-b&since={SINCE}&until={UNTIL}")).json()
        assert await figures_on(page) == figures_of(theirs)
        assert list((await figures_on(page))["by_clinician"]) == ["clin-b"]
        await screens.shoot(page, "lead-november-clin-b")

        # a figure leads to the alerts behind it
        await page.goto(f"{base}/?since={SINCE}&until={UNTIL}")
        await page.locator("[data-figure=ruptures-repaired]").click()
        await page.get_by_role("heading", name="Alerts behind the figure").wait_for()
        ids = await page.locator("[data-testid=alerts-behind] tr[data-alert-id]").evaluate_all(
            "rows => rows.map(r => r.dataset.alertId)")
        assert ids == ["a2"]
        await screens.shoot(page, "alerts-behind-repaired-ruptures")
        await page.goto(f"{base}/?since={SINCE}&until={UNTIL}")
        await page.locator("[data-figure=not-on-track]").click()
        ids = await page.locator("[data-testid=alerts-behind] tr[data-alert-id]").evaluate_all(
            "rows => rows.map(r => r.dataset.alertId)")
        assert sorted(ids) == ["a1", "b3"]
        await screens.shoot(page, "alerts-behind-not-on-track")

        # another tenant's lead, same browser kind, sees only theirs
        other = await (await browser.new_context()).new_page()  # type: ignore[attr-defined]
        await other.goto(link(base, key, f"{tenant}x", "lead"))
        await other.get_by_role("heading", name="Clinical lead dashboard").wait_for()
        assert (await figures_on(other))["open"] == 1


async def test_a_clinician_is_refused_the_lead_and_admin_pages(
    served: tuple[str, Path], tenant: str, screens: Screens
) -> None:
    base, key = served
    async with chromium() as browser:
        context = await browser.new_context()  # type: ignore[attr-defined]
        page = await context.new_page()
        await page.goto(link(base, key, tenant, "clinician", clinician="clin-a"))
        for path in ("/lead", "/lead/alerts?figure=open", "/admin/webhooks", "/admin/instruments"):
            answer = await page.goto(f"{base}{path}")
            assert answer.status == 403, path
            await page.get_by_role("heading", name="Not for your role").wait_for()
        await screens.shoot(page, "clinician-refused")
        assert (await context.request.get(f"{base}/api/v1/figures")).status == 403


async def test_an_admin_sees_the_webhook_endpoints_with_their_attempts_and_the_licensed_instruments(
    served: tuple[str, Path], tenant: str, screens: Screens
) -> None:
    base, key = served
    async with chromium() as browser:
        context = await browser.new_context(viewport={"width": 1200, "height": 900})  # type: ignore[attr-defined]
        page = await context.new_page()
        await page.goto(link(base, key, tenant, "admin"))
        await page.get_by_role("heading", name="Admin").wait_for()
        await screens.shoot(page, "admin-start")
        await page.get_by_role("link", name="Audit trail").first.click()
        await page.get_by_role("heading", name="Audit trail").wait_for()

        await page.get_by_role("link", name="Notifications").click()
        await page.get_by_role("heading", name="Webhook endpoints and e-mail subscriptions").wait_for()
        team = page.locator("[data-target-id='00000000-0000-4000-8000-000000000001']")
        assert "https://hooks.example.test/rapport" in await team.get_by_role("heading").inner_text()
        assert "every clinician of the tenant" in await team.locator(".meta").inner_text()
        outcomes = await team.locator("tr[data-outcome]").evaluate_all("rows => rows.map(r => r.dataset.outcome)")
        assert outcomes == ["delivered", "retried", "dead"]  # newest first
        assert "HTTP 503" in await team.locator("tr[data-outcome=retried]").inner_text()
        assert "whsec_" not in await page.content()  # fingerprints only
        theirs = page.locator("[data-target-id='00000000-0000-4000-8000-000000000002']")
        assert "for clin-a" in await theirs.locator(".meta").inner_text()
        assert "No delivery attempts yet." in await theirs.inner_text()
        await assert_controls_labelled(page)
        await screens.shoot(page, "admin-webhooks")

        # Retry the dead delivery and delete clin-a's endpoint, in place (htmx): no reload
        await page.evaluate("window.notReloaded = true")
        assert await team.get_by_role("button", name="Retry").count() == 1  # the dead one only
        await team.get_by_role("button", name="Retry").click()
        await team.get_by_role("status").wait_for()
        assert "Sent again" in await team.get_by_role("status").inner_text()
        assert "pending" in await team.locator("tr[data-outcome=dead]").inner_text()  # the delivery now
        assert await team.get_by_role("button", name="Retry").count() == 0
        page.once("dialog", lambda dialog: dialog.accept())
        await theirs.get_by_role("button", name="Delete").click()
        await page.locator("[data-target-id='00000000-0000-4000-8000-000000000002'][data-gone=true]").wait_for()
        assert await page.evaluate("window.notReloaded") is True
        await screens.shoot(page, "admin-webhooks-after-retry-and-delete")
        await page.reload()
        assert await page.locator("[data-target-id='00000000-0000-4000-8000-000000000002']").count() == 0
        assert "pending" in await team.locator("tr[data-outcome=dead]").inner_text()

        # the tenant's live sessions: a lead signed in elsewhere, ended in place; the admin's own is theirs to sign out
        lead_context = await browser.new_context()  # type: ignore[attr-defined]
        lead_page = await lead_context.new_page()
        await lead_page.goto(link(base, key, tenant, "lead"))
        await lead_page.get_by_role("heading", name="Clinical lead dashboard").wait_for()
        await page.get_by_role("link", name="Sessions").first.click()
        await page.get_by_role("heading", name="Signed-in sessions").wait_for()
        roles = await page.locator("tr[data-session]").evaluate_all("rows => rows.map(r => r.dataset.role)")
        assert sorted(roles) == ["admin", "lead"]
        mine = page.locator("tr[data-role=admin]")
        assert "(you)" in await mine.inner_text() and await mine.get_by_role("button").count() == 0
        await assert_controls_labelled(page)
        await screens.shoot(page, "admin-sessions")
        await page.locator("tr[data-role=lead]").get_by_role("button", name="End session").click()
        await page.locator("tr[data-gone=true]").wait_for()
        assert "is signed out" in await page.locator("tr[data-gone=true]").inner_text()
        assert (await lead_page.goto(f"{base}/")).status == 401  # signed out at once
        await lead_context.close()

        await page.get_by_role("link", name="Instruments").click()
        await page.get_by_role("heading", name="Instruments").wait_for()
        usable = dict(await page.locator("tr[data-instrument]").evaluate_all(
            "rows => rows.map(r => [r.dataset.instrument, r.dataset.usable])"))
        assert usable["ors"] == "yes" and usable["phq9"] == "yes" and usable["sai"] == "no"
        assert "Not usable" in await page.locator("tr[data-instrument=sai]").inner_text()  # words, not colour
        assert "nosuch" in await page.get_by_role("alert").inner_text()
        await screens.shoot(page, "admin-instruments")

        rows = await (await context.request.get(f"{base}/api/v1/audit")).json()
        done = {(r["action"], r["resource"], r["detail"]) for r in rows["entries"] if r["outcome"] == 200}
        assert ("manage_webhooks", "webhook/00000000-0000-4000-8000-000000000001", "read_attempts") in done
        assert ("read_instruments", "instruments", None) in done
        commands = {(r["action"], r["outcome"], r["resource"], r["detail"]) for r in rows["entries"]}
        assert ("manage_webhooks", 202, "webhook/00000000-0000-4000-8000-000000000001/delivery/"
                "00000000-0000-4000-8000-0000000000d2", "retry") in commands
        assert ("manage_webhooks", 204, "webhook/00000000-0000-4000-8000-000000000002", "delete") in commands
