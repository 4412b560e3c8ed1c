"""The stream leader of a three-node NATS cluster killed mid-load (issue 16 item 5): the streams are
created R3 (RAPPORT_STREAM_REPLICAS=3), the services reach the cluster through a comma-separated
RAPPORT_BROKER_URL, the node leading the RAPPORT stream (and RAPPORT_IN, whose leadership is moved
there before the load) is killed with -9 a third of the way in and started again; every submission
ends answered, scored and evaluated exactly once, nothing dead-lettered, no service restarted, and
the node is a current replica of both streams again."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from cluster import NatsCluster
from nats.aio.client import Client
from rig import FAULT_SETTINGS, FIGURES, SERVICES, Ledger, Load, Readiness, Sampler, eventually, log, pipeline
from rig import synthetic_submissions as make_submissions

from rapport.shared.messaging import subjects

pytestmark = pytest.mark.faults

SUBMISSIONS = 900
RATE = 300.0
COMPLETION_TIMEOUT = 240.0
# as deploy/nats/cluster.conf: the services' /readyz then reports the broker's interval sync
CLUSTER_SETTINGS = {"RAPPORT_STREAM_REPLICAS": "3", "RAPPORT_BROKER_SYNC": "10s"}


async def leader_of(client: Client, stream: str) -> str | None:
    try:  # a short timeout: while no node leads the stream, nobody answers
        info = (await client.jetstream(timeout=1).stream_info(stream)).cluster
    except Exception:  # no leader to answer yet, or the client reconnecting
        return None
    return info.leader if info is not None else None


async def lead_from(client: Client, stream: str, node: str) -> None:
    """Move `stream`'s leadership to `node` (a stepdown asking for it as the preferred peer, again
    until it lands there), so that killing that node takes both streams' leaders at once."""
    async def there() -> bool:
        if await leader_of(client, stream) == node:
            return True
        request = json.dumps({"placement": {"preferred": node}}).encode()
        await client.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", request, timeout=5)
        return False
    await eventually(there, 30, f"{node} leads {stream}", interval=1.0)


async def test_kill_9_of_the_stream_leader_of_a_three_node_cluster_mid_load(
    tmp_path: Path, postgres_admin_url: str
) -> None:
    began = time.monotonic()
    submissions = make_submissions(SUBMISSIONS, sessions=4)
    cluster = NatsCluster(tmp_path / "cluster")
    settings = FAULT_SETTINGS | CLUSTER_SETTINGS
    async with pipeline(tmp_path, postgres_admin_url, with_proxy=False, settings=settings, broker=cluster) as p:
        js = p.js_client.jetstream()
        for stream in (subjects.INBOUND_STREAM, subjects.EVENT_STREAM, subjects.DEADLETTER_STREAM):
            info = await js.stream_info(stream)
            assert info.config.num_replicas == 3, f"{stream} has {info.config.num_replicas} replicas"
            assert info.cluster is not None and info.cluster.leader, f"{stream} has no leader"
            followers = info.cluster.replicas or []
            assert len(followers) == 2 and not any(f.offline for f in followers), f"{stream}: {followers}"
        event_leader = await leader_of(p.js_client, subjects.EVENT_STREAM)
        assert event_leader is not None, f"{subjects.EVENT_STREAM} has no leader"
        inbound_leader = await leader_of(p.js_client, subjects.INBOUND_STREAM)
        if inbound_leader != event_leader:
            await lead_from(p.js_client, subjects.INBOUND_STREAM, event_leader)
        ledger = Ledger(p.broker_url, p.tenant, submissions)
        await ledger.start()
        readiness = Readiness(p.services)
        readiness.start()
        sampler = Sampler(p.database, p.services, interval=0.5)
        await sampler.start()
        load = Load(p.broker_url, p.tenant, submissions, rate=RATE)
        a_third_in = load.reached(SUBMISSIONS // 3)
        sending = asyncio.create_task(load.run())
        try:
            await asyncio.wait_for(a_third_in.wait(), 60)
            leaders = {s: await leader_of(p.js_client, s) for s in (subjects.EVENT_STREAM, subjects.INBOUND_STREAM)}
            assert leaders[subjects.EVENT_STREAM] is not None, f"{subjects.EVENT_STREAM} has no leader"
            assert len(set(leaders.values())) == 1, f"the streams' leaders moved apart: {leaders}"
            leader = cluster.node(leaders[subjects.EVENT_STREAM])
            log(f"cluster: {load.acked} acknowledged, {ledger.evaluated} evaluated: kill -9 {leader.name}, "
                f"leader of {' and '.join(leaders)}")
            start = time.monotonic()
            leader.kill()

            async def new_leaders() -> bool:
                found = [await leader_of(p.js_client, s) for s in (subjects.EVENT_STREAM, subjects.INBOUND_STREAM)]
                return all(name not in (None, leader.name) for name in found)
            await eventually(new_leaders, 30, "other nodes lead both streams")
            elected = time.monotonic() - start
            await asyncio.sleep(3.0)  # the length of the fault: the node stays down a while
            cluster.restart(leader)
            end = time.monotonic()
            await asyncio.wait_for(sending, COMPLETION_TIMEOUT)
            await ledger.wait_evaluated(SUBMISSIONS, COMPLETION_TIMEOUT)
            last = max(ledger.evaluated_at.values())
            await eventually(lambda: p.quiet(sampler, ledger), 120, "no work left anywhere")
            rows = await p.rows(sampler)

            async def whole_again() -> bool:  # the restarted node back in both streams and caught up
                for stream in (subjects.EVENT_STREAM, subjects.INBOUND_STREAM):
                    info = (await js.stream_info(stream)).cluster
                    followers = (info.replicas or []) if info is not None else []
                    if len(followers) != 2 or not all(f.current and not f.offline for f in followers):
                        return False
                return True
            await eventually(whole_again, 60, f"{leader.name} current again in both streams")
            dead_letters = await p.stream_messages(subjects.DEADLETTER_STREAM)
        finally:
            if not sending.done():
                sending.cancel()
            readiness.stop()
            await sampler.stop()
            await ledger.stop()

        figures = {
            "test": "kill -9 stream leader", "submissions": SUBMISSIONS, "fault_s": round(end - start, 1),
            "recovered_s": round(max(0.0, last - end), 1), "leader_elected_s": round(elected, 1),
            "all_evaluated_after_kill_s": round(last - start, 1),
            "ready_again_s": {s: readiness.ready_again(s, end) for s in SERVICES},
            "not_ready_s": {s: readiness.not_ready_seconds(s, start, end + 30) for s in SERVICES},
            "outbox_max": sampler.max_outbox(), "re_placed_evaluations": ledger.re_placed_evaluations(),
            "republished_by_client": load.resent, "events": len(ledger.sequences),
            "total_s": round(time.monotonic() - began, 1),
        }
        FIGURES.append(figures)
        log(f"cluster: {figures}")
        assert ledger.problems() == []
        assert dead_letters == 0, f"{dead_letters} messages in {subjects.DEADLETTER_STREAM}"
        assert rows == {"ingest_submissions": SUBMISSIONS, "scoring_scores": SUBMISSIONS,
                        "alerts_scores": SUBMISSIONS}
        for service, process in p.services.items():
            assert process.alive and process.starts == 1, f"{service} restarted or exited:\n{process.log_tail()}"
