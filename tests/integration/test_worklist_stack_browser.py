"""The worklist in a real browser on the real pipeline: ingest, scoring and alerts on the real NATS
JetStream and SQLite, and the gateway as `rapport serve gateway` builds it. A therapist signed in
through a login link sees a synthetic client's SRS drop appear on their worklist live, as an
alliance rupture with the alerts service's own words, acknowledges it in place (the alerts service
carries it out, over the broker) and finds the acknowledgement in the audit trail; another clinician
sees nothing of it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from browser_rig import Screens, chromium, output_dir
from dashboard_rig import bearer, gateway_settings, link, serving, signing_key
from harness import running, watching

pytestmark = [pytest.mark.nats, pytest.mark.browser]

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
CLIENT, EPISODE, CLINICIAN = "client-0042", "client-0042-ep1", "clin-42"


def srs(sid: str, total: float, *, day: int) -> bytes:
    quarter = round(total / 4, 1)
    items = [quarter, quarter, quarter, round(total - 3 * quarter, 1)]
    return json.dumps({
        "submission_id": sid, "instrument": "srs", "client_id": CLIENT, "episode_id": EPISODE,
        "clinician_id": CLINICIAN, "administered_at": (T0 + timedelta(days=day)).isoformat(),
        "responses": {str(n + 1): v for n, v in enumerate(items)},
    }).encode()


@pytest_asyncio.fixture
async def sqlite_url(sqlite_databases: object) -> str:
    url: str = await sqlite_databases.sqlite()  # type: ignore[attr-defined]
    return url


async def test_a_rupture_arrives_live_on_the_worklist_and_is_acknowledged_in_place(
    sqlite_url: str, fresh_stream: str, tenant: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    screens = Screens(output_dir(request.node.name))
    key = signing_key(tmp_path)
    settings = gateway_settings(sqlite_url, key, licensed_instruments=f"{tenant}:srs")
    async with running(["ingest", "scoring", "alerts"], settings, fresh_stream), \
            serving(settings, fresh_stream) as base, watching(fresh_stream, tenant) as watch, chromium() as browser:
        page = await (await browser.new_context(viewport={"width": 1100, "height": 800})).new_page()  # type: ignore[attr-defined]
        await page.goto(link(base, key, tenant, "clinician", clinician=CLINICIAN))
        await page.get_by_text("Nothing needs you now.").wait_for()
        await page.locator("[data-live='open']").wait_for()
        await page.evaluate("window.notReloaded = true")

        for sid, total, day in (("srs-0001", 38.0, 0), ("srs-0002", 31.0, 7)):
            journey = await watch.submit(srs(sid, total, day=day))
            await asyncio.wait_for(journey.done.wait(), 30)
        card = page.locator("ol.worklist > li").first
        await card.wait_for(timeout=20_000)
        assert await card.get_attribute("data-status") == "open"
        assert "SRS" in await card.get_by_role("heading").inner_text()
        assert await card.locator(".prompt").count() == 1
        assert await page.evaluate("window.notReloaded") is True
        await screens.shoot(page, "rupture-arrived-live")

        alert_id = await card.get_attribute("data-alert-id")
        await card.get_by_role("button", name="Acknowledge").click()
        await page.locator(f"#alert-{alert_id}[data-status='acknowledged']").wait_for(timeout=20_000)
        await screens.shoot(page, "acknowledged")

        # the page a notification links to names every transition
        for _ in range(50):  # the read model follows the events it is fed: a moment after the command's answer
            await page.goto(f"{base}/alerts/{alert_id}")
            history = await page.get_by_test_id("history").locator("tbody tr").evaluate_all(
                "rows => rows.map(r => [r.cells[1].innerText, r.cells[2].innerText])")
            if len(history) == 2:
                break
            await asyncio.sleep(0.2)
        assert history == [["raised", "rapport/alerts"], ["acknowledged", CLINICIAN]]
        await screens.shoot(page, "the-alert-a-notification-links-to")

        other = await (await browser.new_context()).new_page()  # type: ignore[attr-defined]
        await other.goto(link(base, key, tenant, "clinician", clinician="clin-43"))
        await other.get_by_text("Nothing needs you now.").wait_for()
        assert (await other.goto(f"{base}/alerts/{alert_id}")).status == 404

        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            own = {"Authorization": f"Bearer {bearer(key, tenant, 'clinician', clinician=CLINICIAN)}"}
            [listed] = (await http.get("/api/v1/alerts", headers=own)).json()["alerts"]
            assert (listed["alert_id"], listed["status"]) == (alert_id, "acknowledged")
            rows = (await http.get("/api/v1/audit", params={"action": "acknowledge_alert"}, headers={
                "Authorization": f"Bearer {bearer(key, tenant, 'admin')}"})).json()["entries"]
            # 200 once the alerts service answered within the wait, 202 when it answered later (on a loaded machine)
            assert [(r["subject"], r["resource"], r["outcome"] in (200, 202)) for r in rows] == [
                (CLINICIAN, f"alert/{alert_id}", True)]
        await page.close()
        await other.close()
