"""Webhook secrets sealed at rest, with real parts: the gateway under uvicorn on the real NATS
JetStream, on SQLite and PostgreSQL, and a receiver on loopback verifying with the Standard Webhooks
reference library. On the embedded stack's layout the gateway makes its key in the data dir; the
database holds only the sealed secret, yet every delivery verifies with the secret the API showed;
a secret stored in the clear before sealing is sealed at start; with another key (the first one
lost) its tries fail as secret_unreadable, visibly, until the secret is rotated. Synthetic people
only."""

from __future__ import annotations

import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from test_notification_delivery import (
    attempts,
    bearer,
    create_webhook,
    delivery_settings,
    notify_event,
    publish,
    receiving,
    serving,
    token,
)

import rapport.services.gateway.app as gateway_app
from rapport.services.gateway.notifications.domain import fingerprint, new_secret
from rapport.services.gateway.notifications.models import WebhookEndpoint
from rapport.services.gateway.notifications.repository import add_target
from rapport.services.gateway.notifications.sealing import SecretsKeyMissing, new_key_text, use_key

pytestmark = pytest.mark.nats



async def stored(sessions: async_sessionmaker[AsyncSession], endpoint_id: str) -> str:
    """The secret column as the database holds it."""
    async with sessions() as session:
        value = (await session.execute(text("SELECT secret FROM gateway_webhook_endpoints WHERE id = :id"),
                                       {"id": endpoint_id})).scalar_one()
    return str(value)


async def test_the_database_holds_only_the_sealed_secret_and_deliveries_still_verify(
    database_url: str, sessions: async_sessionmaker[AsyncSession], fresh_stream: str, tenant: str, key_file: Path
) -> None:
    # the embedded stack's layout: the token key in the data dir, no identity provider
    settings = delivery_settings(database_url, key_file, token_key_file=None, data_dir=key_file.parent)
    admin = token(key_file, tenant, "admin")
    # one endpoint stored in the clear, as before sealing
    legacy_id, legacy_secret = str(uuid.uuid4()), new_secret()
    use_key(None)
    async with receiving() as receiver:
        async with sessions() as session, session.begin():
            await add_target(session, WebhookEndpoint(
                id=legacy_id, tenant=tenant, clinician_id=None, url=receiver.url("/legacy"), description="",
                secret=legacy_secret, created_at=datetime.now(UTC), created_by=f"admin@{tenant}"))
        assert await stored(sessions, legacy_id) == legacy_secret
        async with serving(settings, fresh_stream) as gateway, \
                httpx.AsyncClient(base_url=gateway.base, timeout=30) as http:
            made = await create_webhook(http, admin, receiver.url("/new"))
            receiver.secrets |= {"/new": made["secret"], "/legacy": legacy_secret}
            event_id, subject, body = notify_event(tenant, "clinician-03")
            await publish(fresh_stream, subject, body, event_id)
            arrived = {d.path: d for d in [await receiver.next(), await receiver.next()]}
            assert set(arrived) == {"/new", "/legacy"} and all(d.verified for d in arrived.values())
            for endpoint_id, secret in ((made["id"], made["secret"]), (legacy_id, legacy_secret)):
                held = await stored(sessions, endpoint_id)
                assert held.startswith("sealed1:") and secret.removeprefix("whsec_") not in held
            shown = (await http.get(f"/api/v1/webhooks/{legacy_id}", headers=bearer(admin))).json()
            assert shown["secret_fingerprint"] == fingerprint(legacy_secret)
    made_key = key_file.parent / "webhook-secrets.key"
    assert stat.S_IMODE(made_key.stat().st_mode) == 0o600


async def test_a_gateway_outside_the_embedded_stack_with_no_key_named_stores_secrets_unsealed_and_says_so(
    database_url: str, sessions: async_sessionmaker[AsyncSession], fresh_stream: str, tenant: str,
    key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its token key named (as deploy/ names it): a key made per replica would not be shared."""
    async with serving(delivery_settings(database_url, key_file), fresh_stream) as gateway, \
            httpx.AsyncClient(base_url=gateway.base, timeout=30) as http:
        made = await create_webhook(http, token(key_file, tenant, "admin"), "https://hooks.clinic.example/team")
    assert "RAPPORT_SECRETS_KEY_FILE is not set" in caplog.text
    assert not (key_file.parent / "webhook-secrets.key").exists()
    assert await stored(sessions, made["id"]) == made["secret"]


async def test_with_the_key_lost_tries_fail_visibly_until_the_secret_is_rotated(
    sqlite_databases: object, fresh_stream: str, tenant: str, key_file: Path, tmp_path: Path
) -> None:
    database_url = await sqlite_databases.sqlite()  # type: ignore[attr-defined]
    admin = token(key_file, tenant, "admin")
    async with receiving() as receiver:
        first_key = tmp_path / "first.key"
        first_key.write_text(new_key_text())
        async with serving(delivery_settings(database_url, key_file, secrets_key_file=first_key), fresh_stream) \
                as gateway, httpx.AsyncClient(base_url=gateway.base, timeout=30) as http:
            endpoint = await create_webhook(http, admin, receiver.url("/team"))

        other_key = tmp_path / "another.key"
        other_key.write_text(new_key_text())
        settings = delivery_settings(database_url, key_file, secrets_key_file=other_key)
        async with serving(settings, fresh_stream) as gateway, \
                httpx.AsyncClient(base_url=gateway.base, timeout=30) as http:
            shown = (await http.get(f"/api/v1/webhooks/{endpoint['id']}", headers=bearer(admin))).json()
            assert shown["secret_fingerprint"] == "unreadable"
            event_id, subject, body = notify_event(tenant, "clinician-03")
            await publish(fresh_stream, subject, body, event_id)
            [(_delivery, _attempt, outcome)] = await gateway.attempts(1)
            assert outcome == "rejected"
            [tried] = await attempts(http, admin, endpoint["id"])
            assert (tried["error"], tried["status_code"]) == ("secret_unreadable", None)
            assert receiver.arrived.empty()

            rotated = await http.post(f"/api/v1/webhooks/{endpoint['id']}/rotate-secret", headers=bearer(admin))
            assert rotated.status_code == 200 and rotated.json()["previous_secret_fingerprint"] is None
            receiver.secrets["/team"] = rotated.json()["secret"]
            again = await http.post(f"/api/v1/webhooks/{endpoint['id']}/deliveries/{tried['webhook_id']}/retry",
                                    headers=bearer(admin))
            assert again.status_code == 202
            delivered = await receiver.next()
            assert delivered.verified and len(delivered.headers["webhook-signature"].split(" ")) == 1


def test_a_named_key_file_that_is_missing_stops_the_gateway_before_it_serves(tmp_path: Path, key_file: Path) -> None:
    settings = delivery_settings(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}", key_file,
                                 secrets_key_file=tmp_path / "restored-from-backup.key")
    with pytest.raises(SecretsKeyMissing):
        gateway_app.build(settings, "nats://127.0.0.1:1")
    assert not (tmp_path / "restored-from-backup.key").exists()
