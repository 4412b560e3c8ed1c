"""Notification delivery with real parts: the gateway under uvicorn on the real NATS JetStream, on
SQLite and PostgreSQL; a webhook receiver on loopback that verifies every signature with the
Standard Webhooks reference library and the secret the API gave; a real SMTP server on loopback
(aiosmtpd). The notifications are the alerts service's own (a PHQ-9 with item 9 endorsed, through
the whole pipeline) or notify events published to the broker as the alerts service publishes them.
Retry waits are a tenth of a second so the retries run in a moment; nothing waits on a sleep: each
step awaits the receiver's next request, or the sender's word that it recorded an attempt, before
the API is read. Synthetic people only."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import uvicorn
from aiosmtpd.controller import Controller
from harness import running, settings_for
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

import rapport.services.gateway.app as gateway_app
from rapport.embedded_nats import free_port
from rapport.services.gateway.notifications.wiring import NotificationDelivery, notification_delivery
from rapport.services.gateway.tokens import load_signing_key, mint
from rapport.shared.contracts.alert import Notification
from rapport.shared.contracts.envelope import derived_event_id
from rapport.shared.messaging import subjects
from rapport.shared.messaging.publish import cloud_event
from rapport.shared.settings import Settings

pytestmark = pytest.mark.nats

NOW = datetime.now(UTC)
PUBLIC_URL = "https://rapport.clinic.example"



def token(key_file: Path, tenant: str, role: str, clinician: str | None = None) -> str:
    return mint(load_signing_key(key_file), tenant=tenant, role=role, audience="rapport", now=NOW,
                ttl=timedelta(hours=1), clinician=clinician)


def delivery_settings(database_url: str, key_file: Path, **overrides: Any) -> Settings:
    """The receivers here listen on loopback over plain http: allowed explicitly (the SSRF guard
    refuses both by default; tests/integration/test_webhook_address_guard.py)."""
    return settings_for(database_url, **{
        "webhook_allow_hosts": "127.0.0.1", "webhook_allow_http": True,
        "token_key_file": key_file, "gateway_answer_wait_seconds": 15.0, "gateway_public_url": PUBLIC_URL,
        "notify_retry_seconds": [0.1, 0.1], "notify_poll_seconds": 0.05, "webhook_timeout_seconds": 5.0,
        **overrides})


@dataclass
class Gateway:
    base: str
    recorded: asyncio.Queue[tuple[str, int, str]]  # (webhook-id, attempt, outcome) once committed

    async def attempts(self, count: int) -> list[tuple[str, int, str]]:
        async with asyncio.timeout(20):
            return [await self.recorded.get() for _ in range(count)]


@asynccontextmanager
async def serving(settings: Settings, nats_url: str) -> AsyncIterator[Gateway]:
    """The gateway as `rapport serve gateway` runs it: its ASGI app under uvicorn, lifespan and all;
    its notification sender tells the test of each attempt it records."""
    made: list[NotificationDelivery] = []

    def keeping(*args: Any, **kwargs: Any) -> NotificationDelivery:
        made.append(notification_delivery(*args, **kwargs))
        return made[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gateway_app, "notification_delivery", keeping)
        _runtime, asgi = gateway_app.build(settings, nats_url)
    recorded: asyncio.Queue[tuple[str, int, str]] = asyncio.Queue()
    made[0].sender.recorded.append(lambda d, then: recorded.put_nowait((d.id, d.attempt, then.outcome)))
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=free_port(), log_config=None,
                                           access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            pytest.fail("the gateway did not start")
        await asyncio.sleep(0.02)
    try:
        yield Gateway(f"http://127.0.0.1:{server.config.port}", recorded)
    finally:
        server.should_exit = True
        await task


# a webhook receiver on loopback


@dataclass
class Delivered:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    answered: int | str


@dataclass
class Receiver:
    """Answers each request as its script says (a status code, or "hang" past the sender's timeout;
    200 once the script is done) and verifies each signature with the path's secret."""

    base: str = ""
    secrets: dict[str, str] = field(default_factory=dict)
    script: deque[int | str] = field(default_factory=deque)
    arrived: asyncio.Queue[Delivered] = field(default_factory=asyncio.Queue)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    async def next(self) -> Delivered:
        async with asyncio.timeout(20):
            return await self.arrived.get()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        try:
            Webhook(self.secrets[scope["path"]]).verify(body, headers)
            verified = True
        except (KeyError, WebhookVerificationError):
            verified = False
        answer = self.script.popleft() if self.script else 200
        self.arrived.put_nowait(Delivered(scope["path"], headers, body, verified, answer))
        if answer == "hang":
            await self.released.wait()
            answer = 200
        await send({"type": "http.response.start", "status": answer, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"noted"})


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    server = uvicorn.Server(uvicorn.Config(receiver, host="127.0.0.1", port=free_port(), log_config=None,
                                           access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    receiver.base = f"http://127.0.0.1:{server.config.port}"
    try:
        yield receiver
    finally:
        receiver.released.set()
        server.should_exit = True
        await task


# an SMTP server on loopback


class Mailbox:
    """Answers each message's DATA as its script says ("451 ...", "550 ..."; "250 OK" once done)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.arrived: asyncio.Queue[tuple[list[str], Message]] = asyncio.Queue()
        self.script: deque[str] = deque()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's name
        item = (list(envelope.rcpt_tos), message_from_bytes(envelope.content))
        self.loop.call_soon_threadsafe(self.arrived.put_nowait, item)
        return self.script.popleft() if self.script else "250 OK"

    async def next(self) -> tuple[list[str], Message]:
        async with asyncio.timeout(20):
            return await self.arrived.get()


@asynccontextmanager
async def mail_server() -> AsyncIterator[tuple[str, Mailbox]]:
    mailbox = Mailbox(asyncio.get_running_loop())
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    await asyncio.to_thread(controller.start)
    try:
        yield f"smtp://127.0.0.1:{controller.port}", mailbox
    finally:
        await asyncio.to_thread(controller.stop)


# the alerts service's notify events, published as it publishes them


def notify_event(tenant: str, clinician: str, alert_id: str = "alert-0001") -> tuple[str, str, bytes]:
    notification = Notification(
        alert_id=alert_id, kind="alliance_rupture", severity="high", transition="raised", client_id="client-0007",
        episode_id="episode-0007-1", headline="Alliance drop (bond): SRS 31, down from 38 last session",
        evidence="SRS 31 on 2026-03-09, previous 38.", prompt="Ask about the relationship directly.")
    event = cloud_event(entity="notify", verb="sent", service="alerts", tenant=tenant,
                        subject=subjects.notify(tenant, clinician), about=alert_id, data=notification,
                        event_id=derived_event_id("notify", tenant, alert_id, str(uuid.uuid4())))
    return event.event_id, event.subject, event.body


async def publish(nats_url: str, subject: str, body: bytes, message_id: str) -> None:
    client = await nats.connect(nats_url)
    try:
        await client.jetstream().publish(subject, body, headers={"Nats-Msg-Id": message_id}, timeout=10)
    finally:
        await client.close()


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def create_webhook(http: httpx.AsyncClient, who: str, url: str, **fields: Any) -> dict[str, Any]:
    answer = await http.post("/api/v1/webhooks", json={"url": url, **fields}, headers=bearer(who))
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


async def attempts(http: httpx.AsyncClient, who: str, target: str, kind: str = "webhooks") -> list[dict[str, Any]]:
    """What the API shows, oldest first."""
    answer = await http.get(f"/api/v1/{kind}/{target}/attempts", headers=bearer(who))
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["attempts"]  # newest first
    return list(reversed(found))


# the stories


async def test_a_critical_item_reaches_the_clinicians_webhook_the_teams_webhook_and_their_inbox_once(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    """A PHQ-9 with item 9 endorsed, submitted over HTTP, raises a critical-item alert: the
    clinician's webhook and the team's each get one POST whose signature verifies with their own
    secret, and the clinician's address one e-mail with the headline, the prompt and the link."""
    async with mail_server() as (smtp_url, mailbox), receiving() as receiver:
        settings = delivery_settings(database_url, key_file, smtp_url=smtp_url)
        admin, clinician = token(key_file, tenant, "admin"), token(key_file, tenant, "clinician", "clinician-03")
        async with running(["ingest", "scoring", "alerts"], settings, fresh_stream), \
                serving(settings, fresh_stream) as gateway, \
            httpx.AsyncClient(base_url=gateway.base, timeout=30) as http:
            own = await create_webhook(http, clinician, receiver.url("/own"), description="my worklist")
            team = await create_webhook(http, admin, receiver.url("/team"))
            receiver.secrets |= {"/own": own["secret"], "/team": team["secret"]}
            assert own["clinician_id"] == "clinician-03" and team["clinician_id"] is None
            assert own["secret"].startswith("whsec_") and own["secret"] != team["secret"]
            mail = await http.post("/api/v1/email-subscriptions", json={"address": "therapist03@clinic.example"},
                                   headers=bearer(clinician))
            assert mail.status_code == 201, mail.text
            other = await http.post("/api/v1/email-subscriptions", json={
                "address": "therapist04@clinic.example", "clinician_id": "clinician-04"}, headers=bearer(admin))
            assert other.status_code == 201, other.text

            submission = {"submission_id": "sub-0901", "instrument": "phq9", "client_id": "client-0901",
                          "episode_id": "episode-0901-1", "clinician_id": "clinician-03",
                          "administered_at": "2026-03-02T10:15:00+00:00", "session": 1,
                          "responses": {"1": 1, "2": 2, "3": 1, "4": 1, "5": 0, "6": 1, "7": 0, "8": 0, "9": 2}}
            answer = await http.post("/api/v1/submissions", json=submission,
                                     headers=bearer(token(key_file, tenant, "integration")))
            assert answer.status_code == 201, answer.text

            first, second = await receiver.next(), await receiver.next()
            by_path = {first.path: first, second.path: second}
            assert set(by_path) == {"/own", "/team"}
            assert all(d.verified for d in by_path.values())
            assert by_path["/own"].headers["webhook-id"] != by_path["/team"].headers["webhook-id"]
            document = json.loads(by_path["/own"].body)
            assert document["type"] == "rapport.notify.sent.v1" and document["tenant"] == tenant
            assert document["data"]["kind"] == "critical_item" and document["data"]["client_id"] == "client-0901"
            assert document["alert_url"] == f"{PUBLIC_URL}/alerts/{document['data']['alert_id']}"
            assert "responses" not in by_path["/own"].body.decode()

            recipients, message = await mailbox.next()
            assert recipients == ["therapist03@clinic.example"]
            text = message.get_payload(decode=True).decode()  # type: ignore[union-attr]
            assert message.get_content_type() == "text/plain"
            assert document["data"]["headline"] in text
            assert f"For the next session: {document['data']['prompt']}" in text
            assert f"Open the alert: {document['alert_url']}" in text
            assert document["data"]["headline"][:40] in message["Subject"]
            assert "responses" not in text and '"9": 2' not in text and "client-0901" in text
            await gateway.attempts(3)  # the two webhooks and the e-mail
            shown = await attempts(http, clinician, own["id"])
            assert [(a["attempt"], a["status_code"], a["outcome"]) for a in shown] == [(1, 200, "delivered")]
            assert shown[0]["webhook_id"] == by_path["/own"].headers["webhook-id"]
        assert receiver.arrived.empty() and mailbox.arrived.empty()  # once each, no e-mail to clinician-04


async def test_a_receiver_answering_500_then_200_is_tried_again_with_the_same_webhook_id(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    settings = delivery_settings(database_url, key_file)
    clinician = token(key_file, tenant, "clinician", "clinician-03")
    async with receiving() as receiver, serving(settings, fresh_stream) as gateway, \
            httpx.AsyncClient(base_url=gateway.base, timeout=30) as http:
        endpoint = await create_webhook(http, clinician, receiver.url("/hook"))
        receiver.secrets["/hook"] = endpoint["secret"]
        receiver.script.extend([500, 200])
        event_id, subject, body = notify_event(tenant, "clinician-03")
        await publish(fresh_stream, subject, body, event_id)

        failed, delivered = await receiver.next(), await receiver.next()
        assert (failed.answered, delivered.answered) == (500, 200)
        assert failed.verified and delivered.verified
        assert failed.headers["webhook-id"] == delivered.headers["webhook-id"]
        assert failed.body == delivered.body
        await gateway.attempts(2)
        shown = await attempts(http, clinician, endpoint["id"])
        assert [(a["attempt"], a["status_code"], a["error"], a["outcome"]) for a in shown] == [
            (1, 500, None, "retried"), (2, 200, None, "delivered")]
        assert shown[0]["next_attempt_at"] is not None and shown[1]["next_attempt_at"] is None
        assert {a["webhook_id"] for a in shown} == {failed.headers["webhook-id"]}
        assert {a["event_id"] for a in shown} == {event_id} and shown[1]["delivery_status"] == "delivered"

        # the same event again (a redelivery, a replay with a new message id): nothing more is sent
        await publish(fresh_stream, subject, body, f"{event_id}-replayed")
        receiver.script.append(500)
        _, subject2, body2 = notify_event(tenant, "clinician-03", "alert-0002")
        await publish(fresh_stream, subject2, body2, str(uuid.uuid4()))
        after = [await receiver.next(), await receiver.next()]
        assert [(json.loads(a.body)["data"]["alert_id"], a.answered) for a in after] == [
            ("alert-0002", 500), ("alert-0002", 200)]
        await gateway.attempts(2)  # alert-0002's two, after alert-0001's two
        everything = await attempts(http, clinician, endpoint["id"])
        assert len(everything) == 4 and len({a["webhook_id"] for a in everything}) == 2


async def test_a_400_is_recorded_and_not_tried_again_and_the_logs_name_ids_only(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="rapport")
    settings = delivery_settings(database_url, key_file)
    admin = token(key_file, tenant, "admin")
    async with receiving() as receiver, serving(settings, fresh_stream) as gateway, \
            httpx.AsyncClient(base_url=gateway.base, timeout=30) as http:
        endpoint = await create_webhook(http, admin, receiver.url("/refuses"), clinician_id="clinician-03")
        receiver.secrets["/refuses"] = endpoint["secret"]
        receiver.script.append(400)
        event_id, subject, body = notify_event(tenant, "clinician-03")
        await publish(fresh_stream, subject, body, event_id)
        refused = await receiver.next()
        assert refused.answered == 400 and refused.verified
        await gateway.attempts(1)
        shown = await attempts(http, admin, endpoint["id"])
        assert [(a["attempt"], a["status_code"], a["outcome"], a["delivery_status"]) for a in shown] == [
            (1, 400, "rejected", "rejected")]
        # a later notification still goes out; the refused one is not among what arrives
        _, subject2, body2 = notify_event(tenant, "clinician-03", "alert-0002")
        await publish(fresh_stream, subject2, body2, str(uuid.uuid4()))
        assert json.loads((await receiver.next()).body)["data"]["alert_id"] == "alert-0002"
        await gateway.attempts(1)
        # the receiver is fixed: the admin has the refused one tried once more, with the same webhook-id
        webhook_id = refused.headers["webhook-id"]
        again = await http.post(f"/api/v1/webhooks/{endpoint['id']}/deliveries/{webhook_id}/retry",
                                headers=bearer(admin))
        assert again.status_code == 202 and again.json() == {
            "webhook_id": webhook_id, "was": "rejected", "delivery_status": "pending"}
        retried = await receiver.next()
        assert retried.headers["webhook-id"] == webhook_id and retried.body == refused.body and retried.verified
        await gateway.attempts(1)
        shown = [a for a in await attempts(http, admin, endpoint["id"]) if a["webhook_id"] == webhook_id]
        assert [(a["attempt"], a["status_code"], a["outcome"]) for a in shown] == [
            (1, 400, "rejected"), (2, 200, "delivered")]
        unknown = await http.post(f"/api/v1/webhooks/{endpoint['id']}/deliveries/{uuid.uuid4()}/retry",
                                  headers=bearer(admin))
        assert unknown.status_code == 404
    logged = [(r.getMessage(), {k: str(v) for k, v in r.__dict__.items()}) for r in caplog.records
              if r.name.startswith("rapport.gateway.notifications")]
    assert any(refused.headers["webhook-id"] in fields.get("delivery_id", "") for _, fields in logged)
    for line, fields in logged:
        for secret_or_phi in ("/refuses", "127.0.0.1", "Alliance drop", "client-0007", endpoint["secret"]):
            assert secret_or_phi not in line and all(secret_or_phi not in v for v in fields.values()), line


async def test_a_receiver_that_never_answers_in_time_is_tried_three_times_then_dead(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    settings = delivery_settings(database_url, key_file, webhook_timeout_seconds=0.5)
    clinician = token(key_file, tenant, "clinician", "clinician-03")
    async with receiving() as receiver, serving(settings, fresh_stream) as gateway, \
            httpx.AsyncClient(base_url=gateway.base, timeout=30) as http:
        endpoint = await create_webhook(http, clinician, receiver.url("/slow"))
        receiver.secrets["/slow"] = endpoint["secret"]
        receiver.script.extend(["hang", "hang", "hang"])
        event_id, subject, body = notify_event(tenant, "clinician-03")
        await publish(fresh_stream, subject, body, event_id)
        tries = [await receiver.next() for _ in range(3)]
        assert len({t.headers["webhook-id"] for t in tries}) == 1 and all(t.verified for t in tries)
        await gateway.attempts(3)
        shown = await attempts(http, clinician, endpoint["id"])
        assert [(a["attempt"], a["status_code"], a["error"], a["outcome"]) for a in shown] == [
            (1, None, "timeout", "retried"), (2, None, "timeout", "retried"), (3, None, "timeout", "dead")]
        assert shown[-1]["delivery_status"] == "dead" and shown[-1]["next_attempt_at"] is None
        assert all(a["duration_ms"] >= 400 for a in shown)


async def test_an_endpoint_that_refuses_connections_is_retried_and_a_deleted_endpoint_gets_nothing_more(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    settings = delivery_settings(database_url, key_file, notify_retry_seconds=[0.1, 0.1, 0.1, 60.0])
    admin = token(key_file, tenant, "admin")
    async with serving(settings, fresh_stream) as gateway, \
            httpx.AsyncClient(base_url=gateway.base, timeout=30) as http:
        closed = f"http://127.0.0.1:{free_port()}/nobody"
        endpoint = await create_webhook(http, admin, closed)
        event_id, subject, body = notify_event(tenant, "clinician-07")
        await publish(fresh_stream, subject, body, event_id)
        await gateway.attempts(4)
        shown = await attempts(http, admin, endpoint["id"])
        assert [(a["error"], a["outcome"]) for a in shown[:4]] == [("connection", "retried")] * 4
        assert shown[3]["delivery_status"] == "pending"  # the fifth try is a minute away
        deleted = await http.delete(f"/api/v1/webhooks/{endpoint['id']}", headers=bearer(admin))
        assert deleted.status_code == 204
        gone = await http.get(f"/api/v1/webhooks/{endpoint['id']}/attempts", headers=bearer(admin))
        assert gone.status_code == 404


# who may see what


async def test_every_route_answers_another_tenant_and_another_clinician_404_and_other_roles_403(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    settings = delivery_settings(database_url, key_file, smtp_url="smtp://127.0.0.1:1")
    admin = token(key_file, tenant, "admin")
    clinician = token(key_file, tenant, "clinician", "clinician-03")
    colleague = token(key_file, tenant, "clinician", "clinician-04")
    other_tenant = f"{tenant}x"
    outsiders = {"another tenant's admin": token(key_file, other_tenant, "admin"),
                 "another tenant's clinician": token(key_file, other_tenant, "clinician", "clinician-03")}
    refused_roles = {"integration": token(key_file, tenant, "integration"), "lead": token(key_file, tenant, "lead")}
    async with serving(settings, fresh_stream) as gateway, \
            httpx.AsyncClient(base_url=gateway.base, timeout=30) as http:
        own = await create_webhook(http, clinician, "https://hooks.clinic.example/c3")
        team = await create_webhook(http, admin, "https://hooks.clinic.example/team")
        for_c3 = await create_webhook(http, admin, "https://hooks.clinic.example/c3-by-admin",
                                      clinician_id="clinician-03")
        mail = (await http.post("/api/v1/email-subscriptions", json={"address": "c3@clinic.example"},
                                headers=bearer(clinician))).json()
        team_mail = (await http.post("/api/v1/email-subscriptions", json={"address": "team@clinic.example"},
                                     headers=bearer(admin))).json()

        def routes(kind: str, target: str) -> list[tuple[str, str]]:
            return [("GET", f"/api/v1/{kind}/{target}"), ("GET", f"/api/v1/{kind}/{target}/attempts"),
                    ("POST", f"/api/v1/{kind}/{target}/deliveries/{uuid.uuid4()}/retry"),
                    ("DELETE", f"/api/v1/{kind}/{target}")]

        targets = {"webhooks": [own["id"], team["id"], for_c3["id"]],
                   "email-subscriptions": [mail["id"], team_mail["id"]]}
        for kind, ids in targets.items():
            for target in ids:
                for method, path in routes(kind, target):
                    for who, bearer_token in outsiders.items():
                        answer = await http.request(method, path, headers=bearer(bearer_token))
                        assert answer.status_code == 404, (who, method, path, answer.text)
                        assert answer.json()["problems"][0]["code"] == "not_found"
                    for role, bearer_token in refused_roles.items():
                        answer = await http.request(method, path, headers=bearer(bearer_token))
                        assert answer.status_code == 403, (role, method, path)
                    assert (await http.request(method, path)).status_code == 401
            mine = {own["id"], for_c3["id"], mail["id"]}
            for target in ids:  # a colleague never sees clinician-03's nor the team's
                for method, path in routes(kind, target):
                    answer = await http.request(method, path, headers=bearer(colleague))
                    assert answer.status_code == 404, (method, path)
                    if target not in mine:  # and clinician-03 not the team's
                        answer = await http.request(method, path, headers=bearer(clinician))
                        assert answer.status_code == 404, (method, path)
            for who, bearer_token in {**outsiders, "a colleague": colleague}.items():
                listed = await http.get(f"/api/v1/{kind}", headers=bearer(bearer_token))
                assert listed.status_code == 200 and next(iter(listed.json().values())) == [], who
            for role, bearer_token in refused_roles.items():
                assert (await http.get(f"/api/v1/{kind}", headers=bearer(bearer_token))).status_code == 403, role
                created = await http.post(f"/api/v1/{kind}", headers=bearer(bearer_token),
                                          json={"url": "https://x.example/", "address": "a@b.example"})
                assert created.status_code == 403, role

        listed = (await http.get("/api/v1/webhooks", headers=bearer(clinician))).json()["webhooks"]
        assert {w["id"] for w in listed} == {own["id"], for_c3["id"]}
        assert all("secret" not in w and len(w["secret_fingerprint"]) == 16 for w in listed)
        everyone = (await http.get("/api/v1/webhooks", headers=bearer(admin))).json()["webhooks"]
        assert {w["id"] for w in everyone} == {own["id"], team["id"], for_c3["id"]}
        assert (await http.get(f"/api/v1/webhooks/{own['id']}", headers=bearer(admin))).status_code == 200
        shown = (await http.get(f"/api/v1/webhooks/{own['id']}", headers=bearer(clinician))).json()
        assert shown["secret_fingerprint"] == own["secret_fingerprint"] and "secret" not in shown

        # a clinician subscribes only for themselves; bad input is refused with the native problems
        for_colleague = await http.post("/api/v1/webhooks", json={"url": "https://x.example/",
                                                                   "clinician_id": "clinician-04"},
                                        headers=bearer(clinician))
        assert for_colleague.status_code == 403
        for body in ({"url": "ftp://x.example/"}, {"url": "https://x.example/", "secret": "mine"},
                     {"url": "https://x.example/", "clinician_id": "a.b"}):
            bad = await http.post("/api/v1/webhooks", json=body, headers=bearer(admin))
            assert bad.status_code == 422, body
            assert "x.example" not in bad.text and bad.json()["problems"]
        not_json = await http.post("/api/v1/webhooks", content=b"url=x", headers={
            **bearer(admin), "Content-Type": "application/x-www-form-urlencoded"})
        assert not_json.status_code == 415

        # the owner deletes; then it is gone for everyone
        assert (await http.delete(f"/api/v1/webhooks/{own['id']}", headers=bearer(clinician))).status_code == 204
        assert (await http.get(f"/api/v1/webhooks/{own['id']}", headers=bearer(admin))).status_code == 404
        assert (await http.delete(f"/api/v1/email-subscriptions/{team_mail['id']}",
                                  headers=bearer(admin))).status_code == 204


async def test_without_an_smtp_relay_no_email_subscription_is_taken(
    sqlite_databases: Any, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    settings = delivery_settings(await sqlite_databases.sqlite(), key_file)
    async with serving(settings, fresh_stream) as gateway, \
            httpx.AsyncClient(base_url=gateway.base, timeout=30) as http:
        answer = await http.post("/api/v1/email-subscriptions", json={"address": "c3@clinic.example"},
                                 headers=bearer(token(key_file, tenant, "clinician", "clinician-03")))
        assert answer.status_code == 409 and answer.json()["problems"][0]["code"] == "email_not_configured"


async def test_a_team_address_gets_every_clinicians_notification_by_email(
    sqlite_databases: Any, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    async with mail_server() as (smtp_url, mailbox):
        settings = delivery_settings(await sqlite_databases.sqlite(), key_file, smtp_url=smtp_url,
                                     smtp_from="rapport@clinic.example")
        admin = token(key_file, tenant, "admin")
        async with serving(settings, fresh_stream) as gateway, \
            httpx.AsyncClient(base_url=gateway.base, timeout=30) as http:
            made = await http.post("/api/v1/email-subscriptions", json={"address": "team@clinic.example"},
                                   headers=bearer(admin))
            assert made.status_code == 201
            for clinician, alert in (("clinician-03", "alert-0003"), ("clinician-04", "alert-0004")):
                event_id, subject, body = notify_event(tenant, clinician, alert)
                await publish(fresh_stream, subject, body, event_id)
            got = [await mailbox.next(), await mailbox.next()]
            assert {tuple(r) for r, _ in got} == {("team@clinic.example",)}
            links = sorted(m.get_payload(decode=True).decode().split("Open the alert: ")[1].split()[0]  # type: ignore[union-attr]
                           for _, m in got)
            assert links == [f"{PUBLIC_URL}/alerts/alert-0003", f"{PUBLIC_URL}/alerts/alert-0004"]
            assert {m["From"] for _, m in got} == {"rapport@clinic.example"}
            made_id = made.json()["id"]
            await gateway.attempts(2)
            shown = await attempts(http, admin, made_id, "email-subscriptions")
            assert {(a["status_code"], a["outcome"]) for a in shown} == {(250, "delivered")}



async def test_an_smtp_relay_deferring_is_tried_again_and_one_refusing_is_not(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    async with mail_server() as (smtp_url, mailbox):
        settings = delivery_settings(database_url, key_file, smtp_url=smtp_url)
        clinician = token(key_file, tenant, "clinician", "clinician-03")
        async with serving(settings, fresh_stream) as gateway, \
                httpx.AsyncClient(base_url=gateway.base, timeout=30) as http:
            made = await http.post("/api/v1/email-subscriptions", json={"address": "c3@clinic.example"},
                                   headers=bearer(clinician))
            subscription = made.json()["id"]
            mailbox.script.extend(["451 4.3.0 mailbox busy, try later", "250 OK", "550 5.1.1 no such user"])
            for alert in ("alert-0001", "alert-0002"):
                event_id, subject, body = notify_event(tenant, "clinician-03", alert)
                await publish(fresh_stream, subject, body, event_id)
                await gateway.attempts(2 if alert == "alert-0001" else 1)
            got = [await mailbox.next() for _ in range(3)]
            deferred, taken = got[0][1], got[1][1]
            assert deferred["Message-ID"] == taken["Message-ID"]  # the retry is the same message
            shown = await attempts(http, clinician, subscription, "email-subscriptions")
            assert [(a["alert_id"], a["attempt"], a["status_code"], a["outcome"]) for a in shown] == [
                ("alert-0001", 1, 451, "retried"), ("alert-0001", 2, 250, "delivered"),
                ("alert-0002", 1, 550, "rejected")]
