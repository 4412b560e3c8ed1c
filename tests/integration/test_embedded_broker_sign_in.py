"""`rapport up` runs its embedded broker with authorization on (issue 16 item 2): nobody signs in
without a user; a tenant added while the stack runs (`rapport tenants add`, or `rapport submit` on
first use) is let in at once, for its own subjects only; the services keep every permission."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import nats
import pytest
from harness import rapport_up
from nats.aio.msg import Msg

from rapport.journeys import Journeys
from rapport.shared.messaging.broker import BrokerRefused, connect_client, connect_options
from rapport.shared.messaging.subjects import submissions_in
from rapport.shared.settings import Settings
from rapport.tenants import TenantRegistry

pytestmark = [pytest.mark.nats, pytest.mark.e2e]


def rapport(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAPPORT_BROKER_URL", "RAPPORT_DATABASE_URL")}
    return subprocess.run([sys.executable, "-m", "rapport.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def phq9(tenant: str, sid: str) -> bytes:
    return json.dumps({
        "submission_id": sid, "instrument": "phq9", "client_id": f"{tenant}-client-01",
        "episode_id": f"{tenant}-ep-01", "clinician_id": "clinician-01",
        "administered_at": "2026-03-02T10:00:00+00:00", "responses": {str(n + 1): 1 for n in range(9)},
    }).encode()


async def _anonymous_is_refused(url: str) -> str:
    try:
        client = await nats.connect(url, allow_reconnect=False, connect_timeout=5)
    except Exception as error:  # nats-py raises the server's -ERR as several types
        return str(error)
    await client.close()
    return "connected"


async def _tenant_round_trip(url: str, data: Path) -> dict[str, object]:
    """acme, signed in as its own user, submits for itself and hears the answer; it cannot publish
    for beta nor hear beta's events."""
    acme_user = TenantRegistry.of(data).find("acme")
    assert acme_user is not None
    acme_settings = acme_user.client_settings(Settings(data_dir=data))
    journeys = await Journeys.connect(url, "acme", acme_settings)
    try:
        journey = await journeys.submit(phq9("acme", "acme-sub-0001"))
        await journeys.wait_until(lambda: journey.done.is_set(), 60)
    finally:
        await journeys.close()

    heard: list[str] = []
    refused: list[str] = []
    both_refused = asyncio.Event()

    async def on_error(error: Exception) -> None:  # the server's permission violations arrive here
        refused.append(str(error))
        if len(refused) >= 2:
            both_refused.set()

    acme = await nats.connect(url, name="acme", error_cb=on_error, **connect_options(acme_settings))
    try:
        async def deliver(msg: Msg) -> None:
            heard.append(msg.subject)

        await acme.subscribe("rapport.beta.>", cb=deliver)
        await acme.publish(submissions_in("beta"), phq9("beta", "forged"), headers={"Nats-Msg-Id": "forged"})
        await acme.flush()
        await asyncio.wait_for(both_refused.wait(), 10)
    finally:
        await acme.close()
    return {"answers": [a["kind"] for a in journey.answers], "refused": refused, "heard": heard}


def test_the_embedded_broker_lets_in_only_registered_users_each_to_its_own_subjects(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with rapport_up(data) as (_process, endpoints):
        url = str(endpoints["broker_url"])
        assert "uthorization" in asyncio.run(_anonymous_is_refused(url)), "no user, no connection"

        added = rapport("tenants", "add", "acme", "--data-dir", str(data))
        assert added.returncode == 0, added.stderr
        assert "now lets it in" in added.stdout
        seed = data / "tenants" / "acme.nk"
        assert stat.S_IMODE(seed.stat().st_mode) == 0o600 and seed.read_text().strip() not in added.stdout

        outcome = asyncio.run(_tenant_round_trip(url, data))
        assert outcome["answers"][:1] == ["rapport.submission.accepted.v1"]  # type: ignore[index]
        assert any("ermissions violation" in r and "rapport.beta" in r for r in outcome["refused"]), outcome  # type: ignore[attr-defined]
        assert outcome["heard"] == []

        # a tenant nobody added: `rapport submit` registers it on first use and its answer comes back
        sample = tmp_path / "phq9.json"
        sample.write_bytes(phq9("clinic-new", "new-sub-0001"))
        submitted = rapport("submit", str(sample), "--tenant", "clinic-new", "--data-dir", str(data))
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        assert "ACCEPTED new-sub-0001" in submitted.stdout
        listed = rapport("tenants", "list", "--json", "--data-dir", str(data))
        assert [t["tenant"] for t in json.loads(listed.stdout)] == ["acme", "clinic-new"]

        # the operator's commands sign in as the services
        checked = rapport("broker", "check", "--data-dir", str(data))
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_seed_that_is_not_registered_is_refused_by_name(tmp_path: Path) -> None:
    data = tmp_path / "data"
    stranger = TenantRegistry(tmp_path / "elsewhere").add("acme")  # a seed this stack never registered
    with rapport_up(data) as (_process, endpoints):
        url = str(endpoints["broker_url"])

        async def attempt() -> str:
            try:
                client = await connect_client(stranger.client_settings(Settings(data_dir=data)), url, name="x")
            except BrokerRefused as refused:
                return str(refused)
            await client.close()
            return "connected"

        said = asyncio.run(attempt())
    assert "RAPPORT_BROKER_NKEY_SEED_FILE" in said and stranger.seed_file.read_text().strip() not in said
