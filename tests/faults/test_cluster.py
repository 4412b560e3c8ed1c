"""The stream leader of a three-node NATS cluster killed mid-load (issue 16 item 5): the streams are
created R3 (RAPPORT_STREAM_REPLICAS=3), the services reach the cluster through a comma-separated
RAPPORT_BROKER_URL, the node leading the RAPPORT stream is killed with -9 a third of the way in and
started again; every submission ends answered, scored and evaluated exactly once, nothing
dead-lettered, no service restarted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from cluster import NatsCluster
from rig import FAULT_SETTINGS, FIGURES, SERVICES, Ledger, Load, Readiness, Sampler, eventually, log, pipeline
from rig import synthetic_submissions as make_submissions

from rapport.shared.messaging import subjects

pytestmark = pytest.mark.faults

SUBMISSIONS = 900
RATE = 300.0
COMPLETION_TIMEOUT = 240.0


async def test_kill_9_of_the_stream_leader_of_a_three_node_cluster_mid_load(
    tmp_path: Path, postgres_admin_url: str
) -> None:
    began = time.monotonic()
    submissions = make_submissions(SUBMISSIONS, sessions=4)
    cluster = NatsCluster(tmp_path / "cluster")
    settings = FAULT_SETTINGS | {"RAPPORT_STREAM_REPLICAS": "3"}
    async with pipeline(tmp_path, postgres_admin_url, with_proxy=False, settings=settings, broker=cluster) as p:
        js = p.js_client.jetstream()
        for stream in (subjects.INBOUND_STREAM, subjects.EVENT_STREAM, subjects.DEADLETTER_STREAM):
            info = await js.stream_info(stream)
            assert info.config.num_replicas == 3, f"{stream} has {info.config.num_replicas} replicas"
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2, stream
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
            leader_info = (await js.stream_info(subjects.EVENT_STREAM)).cluster
            assert leader_info is not None and leader_info.leader is not None
            leader = cluster.node(leader_info.leader)
            log(f"cluster: {load.acked} acknowledged, {ledger.evaluated} evaluated: kill -9 {leader.name}")
            start = time.monotonic()
            leader.kill()

            async def new_leader() -> bool:
                try:
                    info = (await js.stream_info(subjects.EVENT_STREAM)).cluster
                except Exception:
                    return False
                return info is not None and info.leader not in (None, leader.name)
            await eventually(new_leader, 30, "another node leads the stream")
            elected = time.monotonic() - start
            await asyncio.sleep(3.0)  # the length of the fault: the node stays down a while
            cluster.restart(leader)
            end = time.monotonic()
            await asyncio.wait_for(sending, COMPLETION_TIMEOUT)
            await ledger.wait_evaluated(SUBMISSIONS, COMPLETION_TIMEOUT)
            last = max(ledger.evaluated_at.values())
            await eventually(lambda: p.quiet(sampler, ledger), 120, "no work left anywhere")
            rows = await p.rows(sampler)
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
            "not_ready_s": {s: readiness.not_ready_seconds(s, start, end + 30) for s in SERVICES},
            "outbox_max": sampler.max_outbox(), "re_placed_evaluations": ledger.re_placed_evaluations(),
            "republished_by_client": load.resent, "total_s": round(time.monotonic() - began, 1),
        }
        FIGURES.append(figures)
        log(f"cluster: {figures}")
        assert ledger.problems() == []
        assert dead_letters == 0, f"{dead_letters} messages in {subjects.DEADLETTER_STREAM}"
        assert rows == {"ingest_submissions": SUBMISSIONS, "scoring_scores": SUBMISSIONS,
                        "alerts_scores": SUBMISSIONS}
        for service, process in p.services.items():
            assert process.alive and process.starts == 1, f"{service} restarted or exited:\n{process.log_tail()}"
