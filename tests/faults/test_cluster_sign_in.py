"""`rapport up` on a three-node cluster that signs everyone in, as the deploy files run it (issue 16,
"done when"): the services on a comma-separated RAPPORT_BROKER_URL with their user and a password
file, streams at 3 replicas, routes that sign in to each other, and a clinic system that submits with
its tenant's own credentials (`rapport tenants add`'s seed) and hears the answer. Nobody gets in
without a user."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import nats
import pytest
from cluster import NatsCluster

from rapport.embedded_nats import write_private
from rapport.tenants import TenantRegistry, inbox_prefix

pytestmark = [pytest.mark.nats, pytest.mark.faults, pytest.mark.e2e]

PASSWORD = "services-password-c1u5"
ROUTE_PASSWORD = "route-password-7e11"


def rapport_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAPPORT_")}
    return env | values


async def _anonymous(url: str) -> str:
    try:
        client = await nats.connect(url, allow_reconnect=False, connect_timeout=5)
    except Exception as error:  # the server's -ERR comes back as several types
        return str(error)
    await client.close()
    return "connected"


def test_rapport_up_on_a_signed_in_cluster_answers_a_tenants_submission(tmp_path: Path) -> None:
    acme = TenantRegistry(tmp_path / "registry").add("acme")
    authorization = "\n".join([
        "authorization {",
        "  users = [",
        f'    {{ user: rapport, password: "{PASSWORD}" }}',
        f"    {acme.config_entry()}",
        "  ]",
        "}",
    ])
    cluster = NatsCluster(tmp_path / "cluster", authorization=authorization, route_password=ROUTE_PASSWORD)
    cluster.start()  # returns once the routes have formed a JetStream cluster with a meta leader
    password_file = tmp_path / "broker_password"
    write_private(password_file, PASSWORD + "\n")
    data = tmp_path / "data"
    up = subprocess.Popen(
        [sys.executable, "-m", "rapport.cli", "up", "--data-dir", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=rapport_env(RAPPORT_BROKER_URL=cluster.url, RAPPORT_BROKER_USER="rapport",
                        RAPPORT_BROKER_PASSWORD_FILE=str(password_file), RAPPORT_STREAM_REPLICAS="3",
                        RAPPORT_BROKER_SYNC="10s", RAPPORT_GRACEFUL_TIMEOUT_SECONDS="3"))
    try:
        assert up.stdout is not None
        said = []
        for line in up.stdout:
            said.append(line)
            if "Rapport is up" in line:
                break
        else:
            pytest.fail(f"rapport up exited with {up.wait()}: {''.join(said)}")
        assert not any(PASSWORD in line for line in said), "the password is never printed"

        assert "uthorization" in asyncio.run(_anonymous(cluster.nodes[1].url)), "no user, no connection"

        sample = tmp_path / "phq9.json"
        sample.write_text(json.dumps({
            "submission_id": "cluster-sub-0001", "instrument": "phq9", "client_id": "acme-client-01",
            "episode_id": "acme-ep-01", "clinician_id": "clinician-01",
            "administered_at": "2026-03-02T10:00:00+00:00", "responses": {str(n + 1): 1 for n in range(9)},
        }))
        clinic = rapport_env(RAPPORT_BROKER_URL=cluster.url, RAPPORT_BROKER_NKEY_SEED_FILE=str(acme.seed_file),
                             RAPPORT_BROKER_INBOX_PREFIX=inbox_prefix("acme"))
        submitted = subprocess.run(
            [sys.executable, "-m", "rapport.cli", "submit", str(sample), "--tenant", "acme", "--timeout", "60",
             "--data-dir", str(data)], capture_output=True, text=True, env=clinic, timeout=120)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        assert "ACCEPTED cluster-sub-0001" in submitted.stdout
        assert "score" in submitted.stdout.lower()

        operator = rapport_env(RAPPORT_BROKER_URL=cluster.url, RAPPORT_BROKER_USER="rapport",
                               RAPPORT_BROKER_PASSWORD_FILE=str(password_file))
        checked = subprocess.run([sys.executable, "-m", "rapport.cli", "broker", "check", "--data-dir", str(data)],
                                 capture_output=True, text=True, env=operator, timeout=120)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "replicas 3" in checked.stdout, checked.stdout
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            up.wait(90)
        cluster.stop()
