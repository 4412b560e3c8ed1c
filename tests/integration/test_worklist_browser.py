"""The therapist's worklist in a real browser (headless Chromium), on the real gateway app, its
sign-in and audit trail on SQLite, reading alerts from an in-memory source (the read model's face):
a clinician sees their own open alerts most urgent first with the evidence and the prompt, and
never another clinician's; acknowledging and resolving happen in place, without a reload, and are
in the audit trail; a new alert appears live; with nothing open the page says so. Screenshots
under test-output/browser/<test>/. Synthetic alerts, pseudonymous ids."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from browser_rig import Screens, assert_controls_labelled, chromium, output_dir
from dashboard_rig import bearer, link, signing_key

from rapport.embedded_nats import free_port
from rapport.services.gateway.dashboard import dashboard
from rapport.services.gateway.http import Gate, create_app
from rapport.services.gateway.tokens import SigningKeyVerifier, load_signing_key
from rapport.services.gateway.worklist import InMemoryAlerts
from rapport.shared.contracts.alert import Alert, Evidence
from rapport.shared.db.engine import create_engine, session_factory
from rapport.shared.settings import Settings

pytestmark = pytest.mark.browser

NOW = datetime.now(UTC).replace(microsecond=0)


def alert(tenant: str, alert_id: str, kind: str, severity: str, *, days_ago: float, clinician: str = "clin-07",
          status: str = "open", client: str = "client-0101", subscale: str | None = None) -> Alert:
    opened = NOW - timedelta(days=days_ago)
    evidence = Evidence(
        rule_id=f"{kind}.v1", rule_version="1", summary={
            "critical_item": "PHQ-9 item 9 endorsed (score 2)",
            "alliance_rupture": "SRS 31, down from 38 last session (bond)",
            "reliable_deterioration": "PHQ-9 up 7 points from baseline 9",
            "not_on_track": "PHQ-9 17 at session 6, expected 11 or less",
        }[kind], submission_id=f"sub-{alert_id}", administered_at=opened, instrument="phq9", score=17.0,
        values={"baseline": 9, "previous": 12, "reliable_change": 6}, sources=["Kroenke 2001"])
    return Alert(alert_id=alert_id, tenant=tenant, kind=kind, severity=severity, status=status,  # type: ignore[arg-type]
                 client_id=client, episode_id="ep-1", clinician_id=clinician, instrument="phq9", subscale=subscale,
                 opened_at=opened, updated_at=opened, evidence=[evidence],
                 repair_prompt="Check in about how the sessions feel and whether the goals still fit.", version=1)


@pytest_asyncio.fixture
async def served(sqlite_databases: Any, tmp_path: Path, tenant: str) -> AsyncIterator[tuple[str, Path, InMemoryAlerts]]:
    url: str = await sqlite_databases.sqlite()
    key = signing_key(tmp_path)
    source = InMemoryAlerts([
        alert(tenant, "a-medium-old", "not_on_track", "medium", days_ago=9),
        alert(tenant, "a-high-new", "alliance_rupture", "high", days_ago=1, subscale="bond"),
        alert(tenant, "a-risk", "critical_item", "high", days_ago=0.5),
        alert(tenant, "a-critical", "reliable_deterioration", "critical", days_ago=2),
        alert(tenant, "a-high-old", "reliable_deterioration", "high", days_ago=5, status="acknowledged"),
        alert(tenant, "a-other-clinician", "critical_item", "critical", days_ago=3, clinician="clin-99"),
        alert(tenant, "a-resolved", "alliance_rupture", "low", days_ago=20, status="resolved"),
    ])
    engine = create_engine(url)
    sessions = session_factory(engine)
    gate = Gate(SigningKeyVerifier(load_signing_key(key).public_key(), audience="rapport"), lambda: 1 << 20)
    pages = dashboard(Settings(token_key_file=key, database_url=url), sessions, gate,
                      clock=lambda: datetime.now(UTC), alerts=source)
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
        yield f"http://127.0.0.1:{server.config.port}", key, source
    finally:
        server.should_exit = True
        await task
        await engine.dispose()


@pytest.fixture
def screens(request: pytest.FixtureRequest) -> Screens:
    return Screens(output_dir(request.node.name))


async def shown_ids(page: Any) -> list[str]:
    ids: list[str] = await page.locator("ol.worklist > li").evaluate_all("items => items.map(i => i.dataset.alertId)")
    return ids


async def test_the_worklist_shows_the_clinicians_open_alerts_most_urgent_first_and_acts_in_place(
    served: tuple[str, Path, InMemoryAlerts], tenant: str, screens: Screens
) -> None:
    base, key, source = served
    async with chromium() as browser:
        page = await (await browser.new_context(viewport={"width": 1100, "height": 900})).new_page()  # type: ignore[attr-defined]
        await page.goto(link(base, key, tenant, "clinician", clinician="clin-07"))
        await page.get_by_role("heading", name="Your worklist").wait_for()
        # risk first, then critical, then high by age (the older first), then medium; never clin-99's
        assert await shown_ids(page) == ["a-risk", "a-critical", "a-high-old", "a-high-new", "a-medium-old"]
        risk = page.locator("#alert-a-risk")
        assert "PHQ-9 item 9 endorsed" in await risk.get_by_role("heading").inner_text()
        assert "phq9 17 on " in await risk.locator(".evidence").inner_text()
        assert "previous 12, baseline 9, reliable change 6" in await risk.locator(".evidence").inner_text()
        assert "goals still fit" in await risk.locator(".prompt").inner_text()
        assert await page.locator("#alert-a-high-old .badge.status").text_content() == "acknowledged"
        await page.locator("[data-live='open']").wait_for()
        await assert_controls_labelled(page)
        # keyboard: from the top of the page, Tab reaches the first alert's Acknowledge button
        for _ in range(12):
            await page.keyboard.press("Tab")
            if await page.evaluate("document.activeElement.textContent") == "Acknowledge":
                break
        assert await page.evaluate("document.activeElement.closest('li').dataset.alertId") == "a-risk"
        await screens.shoot(page, "worklist")

        await page.evaluate("window.notReloaded = true")
        await risk.get_by_role("button", name="Acknowledge").click()
        await page.locator("#alert-a-risk[data-status='acknowledged']").wait_for()
        await page.locator("#alert-a-risk .said").filter(has_text="Acknowledged.").wait_for()
        assert await page.locator("#live-status").inner_text() == "Acknowledged."  # announced once, politely
        assert await page.evaluate("document.activeElement.className") == "said"  # focus where the answer is
        assert await page.evaluate("window.notReloaded") is True
        await screens.shoot(page, "acknowledged-in-place")

        critical = page.locator("#alert-a-critical")
        await critical.get_by_label("Reason for resolving").fill("discussed at session 7, plan agreed")
        await critical.get_by_label("Reason for resolving").press("Enter")  # the keyboard sends it
        await page.locator("#alert-a-critical[data-status='resolved']").wait_for()
        await page.locator('#alert-a-critical').wait_for(state='detached')  # gone once the list refreshes
        assert (await page.locator("#live-status").inner_text()).startswith("Resolved: PHQ-9 up 7 points")
        assert await page.evaluate("window.notReloaded") is True
        assert await shown_ids(page) == ["a-risk", "a-high-old", "a-high-new", "a-medium-old"]

        source.put(alert(tenant, "a-live", "critical_item", "critical", days_ago=0.01))
        await page.locator("#alert-a-live").wait_for()
        assert (await shown_ids(page))[0] == "a-live"
        assert await page.evaluate("window.notReloaded") is True
        await screens.shoot(page, "new-alert-arrived-live")

    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        rows = (await http.get("/api/v1/audit", headers={
            "Authorization": f"Bearer {bearer(key, tenant, 'admin')}"})).json()["entries"]
    done = [(r["action"], r["resource"], r["outcome"]) for r in rows if r["action"].endswith("_alert")]
    assert ("acknowledge_alert", "alert/a-risk", 200) in done and ("resolve_alert", "alert/a-critical", 200) in done
    assert any(r["action"] == "read_alerts" and r["resource"] == "worklist" for r in rows)


async def test_a_live_refresh_that_lands_while_a_reason_is_being_typed_keeps_what_was_typed(
    served: tuple[str, Path, InMemoryAlerts], tenant: str
) -> None:
    base, key, source = served
    async with chromium() as browser:
        page = await (await browser.new_context(viewport={"width": 1100, "height": 900})).new_page()  # type: ignore[attr-defined]
        await page.goto(link(base, key, tenant, "clinician", clinician="clin-07"))
        await page.locator("[data-live='open']").wait_for()
        in_flight: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        answer = asyncio.Event()

        async def hold(route: Any) -> None:  # the list's refresh is on its way, not yet answered
            if not in_flight.done():
                in_flight.set_result(None)
            await answer.wait()
            await route.continue_()

        await page.route("**/worklist/items*", hold)
        source.put(alert(tenant, "a-live", "critical_item", "critical", days_ago=0.01))
        await in_flight  # the new alert's event started a refresh before anything was typed
        reason = page.locator("#alert-a-critical").get_by_label("Reason for resolving")
        await reason.fill("discussed at session 7, plan agreed")
        answer.set()
        await page.locator("#live-status").filter(has_text="Changes are waiting until you finish typing.").wait_for()
        assert await reason.input_value() == "discussed at session 7, plan agreed"
        assert await page.locator("#alert-a-live").count() == 0  # not swapped in over the typing
        await page.unroute("**/worklist/items*")

        await reason.press("Enter")
        await page.locator("#alert-a-critical[data-status='resolved']").wait_for()
        await page.locator("#alert-a-live").wait_for()  # the waiting change, once the typing was sent
        assert (await shown_ids(page))[0] == "a-live" and "a-critical" not in await shown_ids(page)


async def test_nothing_open_says_nothing_needs_you_now(
    served: tuple[str, Path, InMemoryAlerts], tenant: str, screens: Screens
) -> None:
    base, key, _source = served
    async with chromium() as browser:
        page = await (await browser.new_context()).new_page()  # type: ignore[attr-defined]
        await page.goto(link(base, key, tenant, "clinician", clinician="clin-00"))
        await page.get_by_text("Nothing needs you now.").wait_for()
        assert await page.locator("ol.worklist").count() == 0
        await screens.shoot(page, "empty-worklist")


async def test_commands_need_the_csrf_token_and_work_without_scripts(
    served: tuple[str, Path, InMemoryAlerts], tenant: str
) -> None:
    base, key, source = served
    async with httpx.AsyncClient(base_url=base, timeout=30, follow_redirects=False) as http:
        url = link(base, key, tenant, "clinician", clinician="clin-07")
        assert (await http.get(url.removeprefix(base))).status_code == 303
        page = await http.get("/")
        csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        forged = await http.post("/worklist/alerts/a-risk/acknowledge", data={"csrf_token": "x"})
        assert forged.status_code == 403
        assert [e.alert.status for e in await source.open_alerts(_clinician(tenant)) if e.alert.alert_id == "a-risk"] \
            == ["open"]
        plain = await http.post("/worklist/alerts/a-risk/acknowledge", data={"csrf_token": csrf})
        assert plain.status_code == 303 and plain.headers["location"] == "/"  # a form without htmx comes back to /
        no_reason = await http.post("/worklist/alerts/a-critical/resolve", data={"csrf_token": csrf, "reason": " "},
                                    headers={"HX-Request": "true"})
        assert no_reason.status_code == 422 and "Say why it is resolved" in no_reason.text
        theirs = await http.post("/worklist/alerts/a-other-clinician/resolve", data={"csrf_token": csrf,
                                 "reason": "not mine"}, headers={"HX-Request": "true"})
        assert theirs.status_code == 404
        again = await http.post("/worklist/alerts/a-risk/acknowledge", headers={"X-CSRF-Token": csrf,
                                                                                "HX-Request": "true"})
        assert again.status_code == 409 and "Nothing changed" in again.text

        # the page a notification links to: the clinician's own alert, resolved ones too; never another's
        own = await http.get("/alerts/a-risk")
        assert own.status_code == 200 and 'data-alert-id="a-risk"' in own.text
        done = await http.get("/alerts/a-resolved")
        assert done.status_code == 200 and 'data-testid="resolved"' in done.text
        assert "Reason for resolving" not in done.text  # nothing left to do on it
        assert (await http.get("/alerts/a-other-clinician")).status_code == 404
        assert (await http.get("/alerts/no-such-alert")).status_code == 404


def _clinician(tenant: str) -> Any:
    from rapport.services.gateway.tokens import Principal

    return Principal(tenant=tenant, role="clinician", subject="clin-07", clinician="clin-07")


async def test_a_worklist_of_200_open_alerts_is_timed_from_navigation_to_the_list_visible(
    served: tuple[str, Path, InMemoryAlerts], tenant: str, screens: Screens
) -> None:
    """Measured, not asserted (the README has the figure): issue 12 asks under 1 s on this machine."""
    base, key, source = served
    kinds = [("critical_item", "critical"), ("alliance_rupture", "high"), ("reliable_deterioration", "medium"),
             ("not_on_track", "low")]
    for n in range(200):
        kind, severity = kinds[n % 4]
        source.put(alert(tenant, f"a-load-{n:03d}", kind, severity, days_ago=n / 10, clinician="clin-200",
                         client=f"client-{n:04d}"))
    async with chromium() as browser:
        context = await browser.new_context()  # type: ignore[attr-defined]
        page = await context.new_page()
        await page.goto(link(base, key, tenant, "clinician", clinician="clin-200"))
        timings = []
        for _ in range(5):
            started = asyncio.get_running_loop().time()
            await page.goto(f"{base}/", wait_until="commit")
            await page.locator("ol.worklist > li:nth-child(200)").wait_for(state="visible")
            timings.append(asyncio.get_running_loop().time() - started)
        assert await page.locator("ol.worklist > li").count() == 200
        size = await page.evaluate("document.documentElement.outerHTML.length")
        print(f"worklist of 200 open alerts: navigation to list visible {min(timings) * 1000:.0f}-"
              f"{max(timings) * 1000:.0f} ms over 5 loads, page {size / 1024:.0f} KiB of HTML")
        await screens.shoot(page, "worklist-200-alerts")
