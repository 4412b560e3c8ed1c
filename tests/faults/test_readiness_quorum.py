"""Readiness when the streams have no leader (issue 16): a 3-node cluster that loses two nodes still
takes the service's connection and answers its pings, but no R3 stream can store or deliver a
message. /readyz must say not ready, naming each stream, within RAPPORT_READINESS_TIMEOUT_SECONDS,
and ready again once the nodes are back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cluster import NatsCluster
from rig import eventually

from rapport.database import upgrade
from rapport.services.ingest.app import build
from rapport.shared.messaging.subjects import STREAM_SUBJECTS
from rapport.shared.service import ServiceRuntime
from rapport.shared.settings import Settings

pytestmark = [pytest.mark.nats, pytest.mark.faults]

TIMEOUT = 1.0


async def test_a_cluster_that_lost_its_quorum_is_not_ready_naming_each_stream_and_ready_again_after(
        tmp_path: Path) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'ingest.db'}"
    await upgrade(database)
    cluster = NatsCluster(tmp_path / "cluster")
    cluster.start()
    settings = Settings(database_url=database, stream_replicas=3, readiness_timeout_seconds=TIMEOUT,
                        graceful_timeout_seconds=2.0, data_dir=tmp_path)
    runtime, _asgi = build(settings, cluster.url)
    try:
        await runtime.start()
        await eventually(lambda: _ready(runtime), 30, "ready on the whole cluster")
        # keep the node the service is connected to: its connection and pings stay fine
        client = runtime.connection()
        assert client is not None and client.connected_url is not None
        kept = client.connected_url.port
        down = [node for node in cluster.nodes if node.port != kept]
        for node in down:
            node.kill()

        async def no_leader() -> bool:
            started = time.monotonic()
            ok, checks = await runtime.ready()
            assert time.monotonic() - started < TIMEOUT + 1.0, "readiness took longer than its timeout"
            return not ok and checks["broker"] is True and all(
                state != "ok" for state in checks["streams"].values())
        await eventually(no_leader, 30, "not ready, each stream without a leader")
        _ok, checks = await runtime.ready()
        assert set(checks["streams"]) == set(STREAM_SUBJECTS)
        assert all(state.startswith(("no leader", "no answer")) for state in checks["streams"].values()), checks

        for node in down:
            cluster.restart(node)
        await eventually(lambda: _ready(runtime), 60, "ready again once the quorum is back")
        _ok, checks = await runtime.ready()
        assert checks["streams"] == dict.fromkeys(STREAM_SUBJECTS, "ok")
    finally:
        await runtime.stop()
        cluster.stop()


async def _ready(runtime: ServiceRuntime) -> bool:
    ok, _checks = await runtime.ready()
    return bool(ok)
