"""A tenant's broker user (issue 16 item 2, first part), on a real nats-server configured with what
`rapport tenants add` prints for an external broker: tenant A's clinic system can submit for A and hear A's answers,
and can neither publish to nor read tenant B's subjects, nor the services' inboxes, nor the
JetStream API. The services keep their own user."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from guarded_nats import GuardedNats
from harness import running, settings_for
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from rapport.broker_admin import init_command
from rapport.journeys import Journeys
from rapport.shared.messaging.broker import connect_client
from rapport.shared.messaging.subjects import INBOUND_STREAM, questionnaire_mappings_in, submissions_in
from rapport.shared.settings import Settings
from rapport.tenants import TenantRegistry, inbox_prefix

pytestmark = pytest.mark.nats
PASSWORD = "services-password-0b7e"


@pytest.fixture
def seeds(tmp_path: Path) -> Path:
    return tmp_path / "tenants"


@pytest.fixture
def server(tmp_path: Path, seeds: Path) -> Iterator[GuardedNats]:
    entries = "\n".join(f"    {TenantRegistry(seeds).add(t).config_entry()}" for t in ("acme", "beta"))
    rules = (f'authorization {{\n  users = [\n    {{ user: "rapport", password: "{PASSWORD}" }}\n'
             f"{entries}\n  ]\n}}\n")
    broker = GuardedNats(tmp_path / "nats", rules).start()
    yield broker
    broker.stop()


def services() -> Settings:
    return Settings(broker_user="rapport", broker_password=PASSWORD)


def clinic_system(seeds: Path, tenant: str) -> Settings:
    return Settings(broker_nkey_seed_file=seeds / f"{tenant}.nk", broker_inbox_prefix=inbox_prefix(tenant))


@pytest_asyncio.fixture
async def sqlite_database(sqlite_databases: Any) -> str:
    return str(await sqlite_databases.sqlite())


def phq9(sid: str) -> bytes:
    return json.dumps({
        "submission_id": sid, "instrument": "phq9", "client_id": "client-0001", "episode_id": "client-0001-ep1",
        "clinician_id": "clinician-01", "administered_at": "2026-03-02T10:00:00+00:00",
        "responses": {str(n + 1): 1 for n in range(9)},
    }).encode()


async def test_a_tenant_submits_and_hears_its_answers_through_its_own_user(
        server: GuardedNats, seeds: Path, sqlite_database: str) -> None:
    assert (await init_command(services(), server.url))[0] == 0
    settings = settings_for(sqlite_database, broker_user="rapport", broker_password=PASSWORD)
    async with running(["ingest"], settings, server.url):
        journeys = await Journeys.connect(server.url, "acme", clinic_system(seeds, "acme"))
        try:
            journey = await journeys.submit(phq9("sub-0001"))
            await journeys.wait_until(lambda: bool(journey.answers), 30)  # ingest only: its answer
        finally:
            await journeys.close()
    assert journey.answers[0]["kind"] == "rapport.submission.accepted.v1"


async def test_tenant_a_can_neither_publish_to_nor_read_tenant_b(server: GuardedNats, seeds: Path) -> None:
    assert (await init_command(services(), server.url))[0] == 0
    rapport = await connect_client(services(), server.url, name="services")
    acme = await connect_client(clinic_system(seeds, "acme"), server.url, name="acme")
    try:
        acme_js, rapport_js = acme.jetstream(timeout=1), rapport.jetstream()
        # publishing for beta: refused by the server, never stored
        with pytest.raises(Exception):  # noqa: B017 (no ack comes: a timeout or no responders)
            await acme_js.publish(submissions_in("beta"), phq9("forged"), headers={"Nats-Msg-Id": "forged"})
        with pytest.raises(NotFoundError):
            await rapport_js.get_last_msg(INBOUND_STREAM, submissions_in("beta"))
        # its own inbound subject: stored and acknowledged
        ack = await acme_js.publish(submissions_in("acme"), phq9("own"), headers={"Nats-Msg-Id": "own"})
        assert ack.stream == INBOUND_STREAM
        # its own tenant's questionnaire-mapping commands are an admin's, through the gateway: refused
        with pytest.raises(Exception):  # noqa: B017
            await acme_js.publish(questionnaire_mappings_in("acme"), b"{}", headers={"Nats-Msg-Id": "mapping"})
        with pytest.raises(NotFoundError):
            await rapport_js.get_last_msg(INBOUND_STREAM, questionnaire_mappings_in("acme"))

        # reading: beta's events and the services' inboxes never reach acme; acme's own do
        seen: dict[str, list[str]] = {"beta": [], "inboxes": [], "acme": []}

        def into(name: str) -> Any:
            async def deliver(msg: Msg) -> None:
                seen[name].append(msg.subject)
            return deliver

        await acme.subscribe("rapport.beta.>", cb=into("beta"))
        await acme.subscribe("_INBOX.>", cb=into("inboxes"))
        got_own = asyncio.Event()

        async def own(msg: Msg) -> None:
            seen["acme"].append(msg.subject)
            got_own.set()

        await acme.subscribe("rapport.acme.>", cb=own)
        await acme.flush()
        await rapport_js.stream_info(INBOUND_STREAM)  # a request: its reply goes to a services' inbox
        await rapport.publish("rapport.beta.score.computed", b"{}")
        await rapport.publish("rapport.acme.score.computed", b"{}")
        await rapport.flush()
        await asyncio.wait_for(got_own.wait(), 10)  # published after the others, on one connection: in order
        assert seen["beta"] == [] and seen["inboxes"] == []
        # nor the JetStream API (which would show every tenant's messages)
        with pytest.raises(Exception):  # noqa: B017
            await acme_js.stream_info(INBOUND_STREAM)
    finally:
        await acme.close()
        await rapport.close()
