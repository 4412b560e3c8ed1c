"""The SSRF guard with real parts: the gateway under uvicorn on the real NATS JetStream, with its
default settings (public https addresses only). A tenant admin cannot point a webhook at the
clinic's own machine, its private network or the cloud metadata service: the API refuses the URL
with 422 naming the field and why; and an endpoint whose address is refused at the time of a try
(its name resolves elsewhere now, or it was stored before the guard) is not connected to at all:
the real loopback receiver behind it hears nothing and the attempt is recorded as refused, not
retried. The allowed case (RAPPORT_WEBHOOK_ALLOW_HOSTS, RAPPORT_WEBHOOK_ALLOW_HTTP) is every test
of test_notification_delivery.py, whose receivers listen on loopback over http. Synthetic people only."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from test_notification_delivery import (
    attempts,
    bearer,
    delivery_settings,
    notify_event,
    publish,
    receiving,
    serving,
    token,
)

from rapport.embedded_nats import free_port
from rapport.services.gateway.notifications.domain import new_secret
from rapport.services.gateway.notifications.models import WebhookEndpoint
from rapport.services.gateway.notifications.repository import add_target

pytestmark = pytest.mark.nats

REFUSED_URLS = {
    "http://hooks.clinic.example/rapport": "https is needed",
    "ftp://hooks.clinic.example/rapport": "an absolute http:// or https:// URL",
    "https://127.0.0.1:9000/rapport": "loopback",
    "https://[::1]/rapport": "loopback",
    "https://localhost:9000/rapport": "the host resolves to an address that is loopback",
    "https://10.1.2.3/ehr/api": "private",
    "https://192.168.0.10/": "private",
    "https://[fd00::5]/": "private",
    "https://169.254.169.254/latest/meta-data/iam/security-credentials/": "link-local",
    "https://[fe80::1]/": "link-local",
    "https://0.0.0.0:8480/": "unspecified",
    "https://224.0.0.1/": "multicast",
}



def strict_settings(database_url: str, key_file: Path, **overrides: Any) -> Any:
    """The test suite's delivery settings without its loopback allowance: the gateway's defaults."""
    return delivery_settings(database_url, key_file, **{"webhook_allow_hosts": "", "webhook_allow_http": False,
                                                        **overrides})


async def test_a_webhook_into_the_clinics_network_or_the_metadata_service_is_refused_when_given(
    sqlite_databases: Any, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    settings = strict_settings(await sqlite_databases.sqlite(), key_file)
    admin = token(key_file, tenant, "admin")
    clinician = token(key_file, tenant, "clinician", "clinician-03")
    async with serving(settings, fresh_stream) as gateway, \
            httpx.AsyncClient(base_url=gateway.base, timeout=30) as http:
        for url, why in REFUSED_URLS.items():
            for who in (admin, clinician):
                answer = await http.post("/api/v1/webhooks", json={"url": url}, headers=bearer(who))
                assert answer.status_code == 422, (url, answer.text)
                problems = answer.json()["problems"]
                assert [(p["field"], p["code"]) for p in problems] in (
                    [("url", "address_refused")], [("url", "value_error")]), url
                assert why in problems[0]["message"], (url, problems)
        assert (await http.get("/api/v1/webhooks", headers=bearer(admin))).json()["webhooks"] == []
        # a public name (here one that does not resolve yet: each try checks again) is taken
        taken = await http.post("/api/v1/webhooks", json={"url": "https://hooks.clinic.example/rapport"},
                                headers=bearer(admin))
        assert taken.status_code == 201, taken.text


async def test_an_endpoint_whose_address_is_refused_at_the_try_is_never_connected_to(
    database_url: str, sessions: async_sessionmaker[AsyncSession], fresh_stream: str, tenant: str, key_file: Path
) -> None:
    """As if its name had resolved to a public address when it was given and to loopback now (DNS
    rebinding), or it was stored before the guard: the sender checks the address it would connect to."""
    settings = strict_settings(database_url, key_file, webhook_allow_http=True)
    admin = token(key_file, tenant, "admin")
    async with receiving() as receiver:
        endpoints = {"by address": receiver.url("/by-address"),
                     "by name": f"http://localhost:{receiver.base.rsplit(':', 1)[1]}/by-name"}
        ids = {}
        async with serving(settings, fresh_stream) as gateway, \
                httpx.AsyncClient(base_url=gateway.base, timeout=30) as http:
            # stored directly once the gateway runs (its secrets are sealed with the gateway's key)
            async with sessions() as session, session.begin():
                for name, url in endpoints.items():
                    ids[name] = str(uuid.uuid4())
                    await add_target(session, WebhookEndpoint(
                        id=ids[name], tenant=tenant, clinician_id=None, url=url, description=name,
                        secret=new_secret(), created_at=datetime.now(UTC), created_by=f"admin@{tenant}"))
            event_id, subject, body = notify_event(tenant, "clinician-03")
            await publish(fresh_stream, subject, body, event_id)
            recorded = await gateway.attempts(2)
            assert sorted(outcome for _id, _attempt, outcome in recorded) == ["rejected", "rejected"]
            for name in endpoints:
                shown = await attempts(http, admin, ids[name])
                assert [(a["attempt"], a["status_code"], a["error"], a["outcome"], a["delivery_status"])
                        for a in shown] == [(1, None, "address_refused", "rejected", "rejected")], name
            assert receiver.arrived.empty()  # nothing reached the loopback receiver


async def test_an_allowed_network_is_reached_and_a_closed_port_there_is_a_connection_failure(
    sqlite_databases: Any, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    """Allowed by the setting, the guard steps aside; what follows is the ordinary retry path."""
    settings = strict_settings(await sqlite_databases.sqlite(), key_file, webhook_allow_hosts="127.0.0.0/8",
                               webhook_allow_http=True, notify_retry_seconds=[60.0])
    admin = token(key_file, tenant, "admin")
    async with receiving() as receiver, serving(settings, fresh_stream) as gateway, \
            httpx.AsyncClient(base_url=gateway.base, timeout=30) as http:
        made = await http.post("/api/v1/webhooks", json={"url": receiver.url("/team")}, headers=bearer(admin))
        closed = await http.post("/api/v1/webhooks", json={"url": f"http://127.0.0.2:{free_port()}/closed"},
                                 headers=bearer(admin))
        assert (made.status_code, closed.status_code) == (201, 201)
        receiver.secrets["/team"] = made.json()["secret"]
        event_id, subject, body = notify_event(tenant, "clinician-03")
        await publish(fresh_stream, subject, body, event_id)
        delivered = await receiver.next()
        assert delivered.verified and delivered.path == "/team"
        outcomes = sorted(outcome for _id, _attempt, outcome in await gateway.attempts(2))
        assert outcomes == ["delivered", "retried"]
        shown = await attempts(http, admin, closed.json()["id"])
        assert [(a["error"], a["outcome"]) for a in shown] == [("connection", "retried")]
