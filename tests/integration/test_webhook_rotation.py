"""Rotating a webhook's secret, with real parts: the gateway under uvicorn on the real NATS JetStream,
on SQLite and PostgreSQL, and a receiver on loopback that verifies signatures with the Standard
Webhooks reference library. After a rotation the new secret is shown once; for a day every try
carries two signatures, so a receiver still holding the old secret and one given the new both
verify; after the day (the changeover's end moved into the past, as a day passing would) only the
new. Every rotation is in the audit trail; another tenant's endpoint and another clinician's are 404,
other roles 403. Synthetic people only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from test_notification_delivery import (
    bearer,
    create_webhook,
    delivery_settings,
    notify_event,
    publish,
    receiving,
    serving,
    token,
)

from rapport.services.gateway.notifications.models import WebhookEndpoint

pytestmark = pytest.mark.nats



def verifies(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


async def test_after_a_rotation_both_secrets_verify_for_a_day_then_only_the_new(
    database_url: str, sessions: async_sessionmaker[AsyncSession], fresh_stream: str, tenant: str, key_file: Path
) -> None:
    settings = delivery_settings(database_url, key_file)
    admin = token(key_file, tenant, "admin")
    clinician = token(key_file, tenant, "clinician", "clinician-03")
    async with receiving() as receiver, serving(settings, fresh_stream) as gateway, \
            httpx.AsyncClient(base_url=gateway.base, timeout=30) as http:
        endpoint = await create_webhook(http, clinician, receiver.url("/own"))
        old = endpoint["secret"]
        before = datetime.now(UTC)
        rotated = await http.post(f"/api/v1/webhooks/{endpoint['id']}/rotate-secret", headers=bearer(clinician))
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["secret"]
        assert new.startswith("whsec_") and new != old
        assert rotated.json()["secret_fingerprint"] != endpoint["secret_fingerprint"]
        assert rotated.json()["previous_secret_fingerprint"] == endpoint["secret_fingerprint"]
        until = datetime.fromisoformat(rotated.json()["previous_secret_until"])
        assert before + timedelta(hours=24) <= until <= datetime.now(UTC) + timedelta(hours=24)
        shown = (await http.get(f"/api/v1/webhooks/{endpoint['id']}", headers=bearer(clinician))).json()
        assert "secret" not in shown and shown["previous_secret_until"] == rotated.json()["previous_secret_until"]

        # during the changeover: the new secret's signature, then the old one's
        event_id, subject, body = notify_event(tenant, "clinician-03")
        await publish(fresh_stream, subject, body, event_id)
        during = await receiver.next()
        signatures = during.headers["webhook-signature"].split(" ")
        assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
        assert verifies(old, during.body, during.headers) and verifies(new, during.body, during.headers)
        await gateway.attempts(1)

        # a day later (the changeover's end moved into the past): the new secret's only
        async with sessions() as session, session.begin():
            await session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint["id"])
                                  .values(previous_secret_until=datetime.now(UTC) - timedelta(seconds=1)))
        event_id, subject, body = notify_event(tenant, "clinician-03", "alert-0002")
        await publish(fresh_stream, subject, body, event_id)
        after = await receiver.next()
        assert len(after.headers["webhook-signature"].split(" ")) == 1
        assert verifies(new, after.body, after.headers) and not verifies(old, after.body, after.headers)
        shown = (await http.get(f"/api/v1/webhooks/{endpoint['id']}", headers=bearer(admin))).json()
        assert shown["previous_secret_fingerprint"] is None and shown["previous_secret_until"] is None

        # rotated twice in a row: the first secret is gone, the second still signs beside the third
        second = (await http.post(f"/api/v1/webhooks/{endpoint['id']}/rotate-secret", headers=bearer(admin))).json()
        assert second["previous_secret_fingerprint"] == rotated.json()["secret_fingerprint"]


async def test_rotation_is_audited_and_refused_to_other_tenants_other_clinicians_and_other_roles(
    sqlite_databases: object, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    settings = delivery_settings(await sqlite_databases.sqlite(), key_file)  # type: ignore[attr-defined]
    admin = token(key_file, tenant, "admin")
    clinician = token(key_file, tenant, "clinician", "clinician-03")
    colleague = token(key_file, tenant, "clinician", "clinician-04")
    outsiders = {"another tenant's admin": token(key_file, f"{tenant}x", "admin"),
                 "another tenant's clinician": token(key_file, f"{tenant}x", "clinician", "clinician-03"),
                 "a colleague": colleague}
    async with serving(settings, fresh_stream) as gateway, \
            httpx.AsyncClient(base_url=gateway.base, timeout=30) as http:
        own = await create_webhook(http, clinician, "https://hooks.clinic.example/c3")
        team = await create_webhook(http, admin, "https://hooks.clinic.example/team")

        for target in (own["id"], team["id"]):
            for who, bearer_token in outsiders.items():
                answer = await http.post(f"/api/v1/webhooks/{target}/rotate-secret", headers=bearer(bearer_token))
                assert answer.status_code == 404, (who, answer.text)
                assert answer.json()["problems"][0]["code"] == "not_found" and "secret" not in answer.json()
            for role in ("integration", "lead"):
                answer = await http.post(f"/api/v1/webhooks/{target}/rotate-secret",
                                         headers=bearer(token(key_file, tenant, role)))
                assert answer.status_code == 403, role
            assert (await http.post(f"/api/v1/webhooks/{target}/rotate-secret")).status_code == 401
        # a clinician rotates their own endpoint, not the team's; an admin rotates any of the tenant's
        team_by_clinician = await http.post(f"/api/v1/webhooks/{team['id']}/rotate-secret", headers=bearer(clinician))
        assert team_by_clinician.status_code == 404
        mine = await http.post(f"/api/v1/webhooks/{own['id']}/rotate-secret", headers=bearer(clinician))
        by_admin = await http.post(f"/api/v1/webhooks/{team['id']}/rotate-secret", headers=bearer(admin))
        assert (mine.status_code, by_admin.status_code) == (200, 200)
        # the refused tries changed nothing: the secrets are the ones these two rotations made
        listed = {w["id"]: w for w in (await http.get("/api/v1/webhooks", headers=bearer(admin))).json()["webhooks"]}
        assert listed[own["id"]]["previous_secret_fingerprint"] == own["secret_fingerprint"]
        assert listed[team["id"]]["previous_secret_fingerprint"] == team["secret_fingerprint"]
        assert listed[own["id"]]["secret_fingerprint"] == mine.json()["secret_fingerprint"]

        rows = (await http.get("/api/v1/audit", headers=bearer(admin))).json()["entries"]
        rotations = [(r["action"], r["resource"], r["outcome"], r["subject"]) for r in reversed(rows)
                     if r["detail"] == "rotate_secret"]
        assert rotations == [
            ("manage_own_webhooks", f"webhook/{own['id']}", 404, "clinician-04"),
            ("manage_own_webhooks", f"webhook/{team['id']}", 404, "clinician-04"),
            ("manage_own_webhooks", f"webhook/{team['id']}", 404, "clinician-03"),
            ("manage_own_webhooks", f"webhook/{own['id']}", 200, "clinician-03"),
            ("manage_webhooks", f"webhook/{team['id']}", 200, f"admin@{tenant}"),
        ]
        assert not any(new_secret in str(rows) for new_secret in (mine.json()["secret"], by_admin.json()["secret"]))
