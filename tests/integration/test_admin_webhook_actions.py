"""The admin's Retry and Delete buttons on /admin/webhooks, on SQLite and PostgreSQL, over the real
gateway app and its sign-in (the session cookie of a login link): a dead delivery is made pending
again with the same webhook-id, an endpoint and an e-mail subscription are deleted with their
deliveries; without scripts the answer is a 303 back to the page, with htmx the target's section in
place; a form without the session's CSRF token changes nothing (403); another tenant's target is a
404 and stays; a lead may not; each command is in the audit trail as the API records it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from dashboard_rig import bearer, dashboard_app, link, signing_key
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.gateway.notifications.domain import NewDelivery, new_secret
from rapport.services.gateway.notifications.models import (
    Delivery,
    DeliveryAttempt,
    EmailSubscription,
    WebhookEndpoint,
)
from rapport.services.gateway.notifications.repository import add_target, queue

NOW = datetime(2026, 11, 10, 12, tzinfo=UTC)
TEAM = "00000000-0000-4000-8000-000000000001"
MAIL = "00000000-0000-4000-8000-000000000002"
THEIRS = "00000000-0000-4000-8000-000000000003"
DEAD = "00000000-0000-4000-8000-0000000000d1"
DONE = "00000000-0000-4000-8000-0000000000d2"


async def seed(sessions: async_sessionmaker[AsyncSession], tenant: str, other: str) -> None:
    """The team endpoint has a dead delivery and a delivered one; an e-mail subscription; another
    tenant's endpoint with a dead delivery of its own."""
    async with sessions() as session, session.begin():
        for target_id, owner in ((TEAM, tenant), (THEIRS, other)):
            await add_target(session, WebhookEndpoint(
                id=target_id, tenant=owner, clinician_id=None, url=f"https://hooks.example.test/{owner}",
                description="team channel", secret=new_secret(), created_at=NOW - timedelta(days=3),
                created_by=f"admin@{owner}"))
        await add_target(session, EmailSubscription(id=MAIL, tenant=tenant, clinician_id="clin-a",
                                                    address="clin-a@clinic.example.test", created_at=NOW,
                                                    created_by=f"admin@{tenant}"))
        await queue(session, [
            NewDelivery(id=DEAD, tenant=tenant, channel="webhook", target_id=TEAM, event_id="ev-1", alert_id="a1",
                        payload=b"{}"),
            NewDelivery(id=DONE, tenant=tenant, channel="webhook", target_id=TEAM, event_id="ev-2", alert_id="a2",
                        payload=b"{}"),
            NewDelivery(id=f"{DEAD[:-2]}e1", tenant=other, channel="webhook", target_id=THEIRS, event_id="ev-3",
                        alert_id="u1", payload=b"{}")], NOW)
        for delivery, target, owner, status, code in ((DEAD, TEAM, tenant, "dead", 503),
                                                     (DONE, TEAM, tenant, "delivered", 200),
                                                     (f"{DEAD[:-2]}e1", THEIRS, other, "dead", 500)):
            row = await session.get(Delivery, delivery)
            assert row is not None
            row.status, row.attempts, row.next_attempt_at, row.finished_at = status, 1, None, NOW
            session.add(DeliveryAttempt(delivery_id=delivery, attempt=1, tenant=owner, target_id=target,
                                        attempted_at=NOW, duration_ms=40, status_code=code, error=None,
                                        outcome=status, next_attempt_at=None))


@pytest_asyncio.fixture
async def gateway(sessions: async_sessionmaker[AsyncSession], tmp_path: Path,
                  database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    key = signing_key(tmp_path)
    app = dashboard_app(sessions, key, database_url)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway",
                                 follow_redirects=False) as http:
        yield http, key


async def signed_in(http: httpx.AsyncClient, key: Path, tenant: str, role: str, **claims: Any) -> str:
    """Opens a login link in `http` (which keeps the cookie) and returns the session's CSRF token."""
    opened = await http.get(link("http://gateway", key, tenant, role, **claims).removeprefix("http://gateway"))
    assert opened.status_code == 303, opened.text
    page = await http.get("/")
    return page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


async def status_of(sessions: async_sessionmaker[AsyncSession], delivery: str) -> str | None:
    async with sessions() as session:
        return (await session.execute(select(Delivery.status).where(Delivery.id == delivery))).scalar_one_or_none()


async def test_an_admin_retries_a_dead_delivery_and_deletes_targets_with_and_without_scripts(
    sessions: async_sessionmaker[AsyncSession], gateway: tuple[httpx.AsyncClient, Path], tenant: str
) -> None:
    http, key = gateway
    await seed(sessions, tenant, f"{tenant}x")
    csrf = await signed_in(http, key, tenant, "admin")
    page = await http.get("/admin/webhooks")
    # a Retry button on the dead delivery only; a Delete button on each target
    assert page.text.count(f"/deliveries/{DEAD}/retry\"") == 2 and f"/deliveries/{DONE}/retry" not in page.text
    assert page.text.count("/delete\"") == 4

    retry = f"/admin/webhooks/webhook/{TEAM}/deliveries/{DEAD}/retry"
    refused = await http.post(retry, data={"csrf_token": "0" * 64})
    assert refused.status_code == 403 and await status_of(sessions, DEAD) == "dead"
    plain = await http.post(retry, data={"csrf_token": csrf})
    assert (plain.status_code, plain.headers["location"]) == (303, "/admin/webhooks")
    assert await status_of(sessions, DEAD) == "pending"
    again = await http.post(retry, headers={"HX-Request": "true", "X-CSRF-Token": csrf})
    assert again.status_code == 202 and "already waiting for its next try" in again.text
    assert again.text.startswith(f'<section class="target" id="target-{TEAM}"')  # the section, in place

    in_place = await http.post(f"/admin/webhooks/email/{MAIL}/delete",
                               headers={"HX-Request": "true", "X-CSRF-Token": csrf})
    assert in_place.status_code == 200 and 'data-gone="true"' in in_place.text and "Deleted" in in_place.text
    deleted = await http.post(f"/admin/webhooks/webhook/{TEAM}/delete", data={"csrf_token": csrf})
    assert (deleted.status_code, deleted.headers["location"]) == (303, "/admin/webhooks")
    assert await status_of(sessions, DEAD) is None and await status_of(sessions, DONE) is None  # its deliveries too
    assert "No webhook endpoints or e-mail subscriptions" in (await http.get("/admin/webhooks")).text

    admin = {"Authorization": f"Bearer {bearer(key, tenant, 'admin')}"}
    rows = (await http.get("/api/v1/audit", params={"action": "manage_webhooks"}, headers=admin)).json()["entries"]
    commands = [(r["outcome"], r["resource"], r["detail"], r["credential"]) for r in reversed(rows)
                if r["detail"] in ("retry", "delete", "csrf")]
    assert commands == [
        (403, None, "csrf", "session"),
        (202, f"webhook/{TEAM}/delivery/{DEAD}", "retry", "session"),
        (202, f"webhook/{TEAM}/delivery/{DEAD}", "retry", "session"),
        (204, f"email-subscription/{MAIL}", "delete", "session"),
        (204, f"webhook/{TEAM}", "delete", "session")]


async def test_another_tenants_target_is_not_found_and_a_lead_may_not(
    sessions: async_sessionmaker[AsyncSession], gateway: tuple[httpx.AsyncClient, Path], tenant: str
) -> None:
    http, key = gateway
    other = f"{tenant}x"
    await seed(sessions, tenant, other)
    csrf = await signed_in(http, key, tenant, "admin")
    foreign = f"/admin/webhooks/webhook/{THEIRS}/deliveries/{DEAD[:-2]}e1/retry"
    assert (await http.post(foreign, data={"csrf_token": csrf})).status_code == 404
    assert (await http.post(f"/admin/webhooks/webhook/{THEIRS}/delete", data={"csrf_token": csrf})).status_code == 404
    assert await status_of(sessions, f"{DEAD[:-2]}e1") == "dead"  # nothing changed for the other tenant
    # a delivery of another of this tenant's targets is not this target's
    assert (await http.post(f"/admin/webhooks/email/{MAIL}/deliveries/{DEAD}/retry",
                            data={"csrf_token": csrf})).status_code == 404
    assert (await http.post(f"/admin/webhooks/sms/{TEAM}/delete", data={"csrf_token": csrf})).status_code == 404
    assert await status_of(sessions, DEAD) == "dead"

    async with httpx.AsyncClient(transport=http._transport, base_url="http://gateway") as lead:
        lead_csrf = await signed_in(lead, key, tenant, "lead")
        refused = await lead.post(f"/admin/webhooks/webhook/{TEAM}/delete", data={"csrf_token": lead_csrf})
        assert refused.status_code == 403
    assert await status_of(sessions, DONE) == "delivered"

    admin = {"Authorization": f"Bearer {bearer(key, tenant, 'admin')}"}
    rows = (await http.get("/api/v1/audit", params={"action": "manage_webhooks"}, headers=admin)).json()["entries"]
    said = [(r["role"], r["outcome"], r["resource"], r["detail"]) for r in reversed(rows)]
    assert said == [
        ("admin", 404, f"webhook/{THEIRS}/delivery/{DEAD[:-2]}e1", "retry"),
        ("admin", 404, f"webhook/{THEIRS}", "delete"),
        ("admin", 404, f"email-subscription/{MAIL}/delivery/{DEAD}", "retry"),
        ("lead", 403, None, "forbidden")]
    theirs = {"Authorization": f"Bearer {bearer(key, other, 'admin')}"}
    assert (await http.get("/api/v1/audit", params={"action": "manage_webhooks"},
                           headers=theirs)).json()["entries"] == []
