"""The notification routes write the audit trail when given one (services/gateway/audit.py), on SQLite
and PostgreSQL: each command (create, delete, retry) and each read of the attempts, in the
transaction of the work, with who, the permission used, the target as a path of ids and the status
answered, refusals included; never a URL or an address."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.gateway.audit import AuditFilters, AuditTrail
from rapport.services.gateway.http import Gate, Refused, refusal_response
from rapport.services.gateway.notifications.api import notifications_router
from rapport.services.gateway.tokens import SigningKeyVerifier, mint

NOW = datetime.now(UTC)
KEY = Ed25519PrivateKey.generate()


def bearer(tenant: str, role: str, clinician: str | None = None) -> dict[str, str]:
    token = mint(KEY, tenant=tenant, role=role, audience="rapport", now=NOW, ttl=timedelta(hours=1),
                 clinician=clinician)
    return {"Authorization": f"Bearer {token}"}


@pytest_asyncio.fixture
async def api(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[tuple[httpx.AsyncClient, AuditTrail]]:
    trail = AuditTrail(sessions)
    gate = Gate(SigningKeyVerifier(KEY.public_key(), audience="rapport"), lambda: 1024 * 1024)
    app = FastAPI()

    @app.exception_handler(Refused)
    async def refused(request: Request, error: Refused) -> Response:
        return refusal_response(request.url.path, error)

    app.include_router(notifications_router(gate, sessions, clock=lambda: datetime.now(UTC), email_configured=True,
                                            audit=trail))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        yield http, trail


async def test_every_command_and_attempts_read_is_audited_with_ids_only(
    api: tuple[httpx.AsyncClient, AuditTrail], tenant: str
) -> None:
    http, trail = api
    admin, clinician = bearer(tenant, "admin"), bearer(tenant, "clinician", "clinician-03")
    made = await http.post("/api/v1/webhooks", json={"url": "https://hooks.clinic.example/secret-path"},
                           headers=admin)
    assert made.status_code == 201
    endpoint = made.json()["id"]
    mail = await http.post("/api/v1/email-subscriptions", json={"address": "c3@clinic.example"}, headers=clinician)
    assert mail.status_code == 201
    assert (await http.get(f"/api/v1/webhooks/{endpoint}/attempts", headers=admin)).status_code == 200
    assert (await http.get(f"/api/v1/webhooks/{endpoint}/attempts", headers=clinician)).status_code == 404
    assert (await http.post(f"/api/v1/webhooks/{endpoint}/deliveries/d-1/retry", headers=admin)).status_code == 404
    assert (await http.delete(f"/api/v1/webhooks/{endpoint}", headers=clinician)).status_code == 404
    assert (await http.delete(f"/api/v1/webhooks/{endpoint}", headers=admin)).status_code == 204
    assert (await http.get("/api/v1/webhooks", headers=admin)).status_code == 200  # a list is not audited

    entries = list(reversed(await trail.entries(AuditFilters(tenant=tenant))))
    assert [(e.action, e.detail, e.resource, e.outcome, e.subject) for e in entries] == [
        ("manage_webhooks", "create", f"webhook/{endpoint}", 201, f"admin@{tenant}"),
        ("manage_own_webhooks", "create", f"email-subscription/{mail.json()['id']}", 201, "clinician-03"),
        ("manage_webhooks", "read_attempts", f"webhook/{endpoint}", 200, f"admin@{tenant}"),
        ("manage_own_webhooks", "read_attempts", f"webhook/{endpoint}", 404, "clinician-03"),
        ("manage_webhooks", "retry", f"webhook/{endpoint}/delivery/d-1", 404, f"admin@{tenant}"),
        ("manage_own_webhooks", "delete", f"webhook/{endpoint}", 404, "clinician-03"),
        ("manage_webhooks", "delete", f"webhook/{endpoint}", 204, f"admin@{tenant}"),
    ]
    assert all(e.role in ("admin", "clinician") and e.credential == "bearer" for e in entries)
    assert not any("secret-path" in str(e.as_json()) or "c3@clinic" in str(e.as_json()) for e in entries)
