"""Faults mid-load (issue 8): kill -9 of each service and of the broker, the database cut for 10 s
and for 120 s, the database hanging for 20 s. Each test runs its own nats-server and database,
sends a bounded load of native PHQ-9, GAD-7 and SRS submissions, applies the fault mid-load and
ends only when every submission is accepted, scored and evaluated exactly once, nothing is
dead-lettered, no process but the killed one restarted, and (database faults) every service said
503 while the fault lasted and 200 after it. Figures are printed (-s) and summed up at the end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cluster import NatsCluster, lead_from, leader_of
from rig import (
    FAULT_SETTINGS,
    FIGURES,
    SERVICES,
    Ledger,
    Load,
    Pipeline,
    Readiness,
    Sampler,
    eventually,
    log,
    pipeline,
    synthetic_submissions,
)

from rapport.shared.messaging import subjects

pytestmark = pytest.mark.faults

SUBMISSIONS = 900  # 75 clients, 4 sessions, a PHQ-9, a GAD-7 and an SRS each
RATE = 300.0  # per second
# after the fault ends: the work redone, batches a killed service held coming back after ack_wait
COMPLETION_TIMEOUT = 240.0
# readiness must say 503 within this long after a database fault starts (readiness timeout 1 s, polls 0.5 s)
NOT_READY_WITHIN = 5.0


@dataclass
class Window:
    """When a fault started and when it was undone (restored, restarted), monotonic seconds."""

    start: float
    end: float
    figures: dict[str, Any] = field(default_factory=dict)  # what else the fault measured

    @property
    def seconds(self) -> float:
        return round(self.end - self.start, 1)


Fault = Callable[[Pipeline], Awaitable[Window]]


def kill_service(name: str, down_seconds: float = 2.0) -> Fault:
    async def fault(p: Pipeline) -> Window:
        start = time.monotonic()
        p.services[name].kill()
        await asyncio.sleep(down_seconds)  # the length of the fault
        p.services[name].start()
        end = time.monotonic()
        await p.wait_ready((name,))
        return Window(start, end)
    return fault


async def kill_broker(p: Pipeline) -> Window:
    start = time.monotonic()
    p.kill_broker()
    await asyncio.sleep(2.0)  # the length of the fault
    p.restart_broker()
    return Window(start, time.monotonic())


def database_fault(kind: str, seconds: float) -> Fault:
    async def fault(p: Pipeline) -> Window:
        assert p.proxy is not None
        start = time.monotonic()
        (p.proxy.cut if kind == "cut" else p.proxy.hang)()
        await asyncio.sleep(seconds)  # the length of the fault
        p.proxy.restore()
        return Window(start, time.monotonic())
    return fault


Check = Callable[[Pipeline], Awaitable[None]]


async def run_under_fault(tmp_path: Path, admin_url: str, name: str, fault: Fault, *, killed: tuple[str, ...] = (),
                          database: bool = False, broker: Any = None, settings: dict[str, str] = FAULT_SETTINGS,
                          before_load: Check | None = None, after_quiet: Check | None = None) -> dict[str, Any]:
    """`before_load` and `after_quiet`: what a fault needs set up or checked beyond the rest
    (a cluster's replicas); `broker`: a broker of the test's own for the pipeline (cluster.py)."""
    began = time.monotonic()
    submissions = synthetic_submissions(SUBMISSIONS, sessions=4)
    async with pipeline(tmp_path, admin_url, settings=settings, broker=broker) as p:
        if before_load is not None:
            await before_load(p)
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
            log(f"{name}: {load.acked} submissions acknowledged, {ledger.evaluated} evaluated: fault")
            window = await fault(p)
            log(f"{name}: fault over after {window.seconds}s; {ledger.evaluated} evaluated so far")
            await asyncio.wait_for(sending, COMPLETION_TIMEOUT)
            await ledger.wait_evaluated(SUBMISSIONS, COMPLETION_TIMEOUT)
            last = max(ledger.evaluated_at.values())
            await eventually(lambda: p.quiet(sampler, ledger), 120, "no work left anywhere")
            rows = await p.rows(sampler)
            if after_quiet is not None:
                await after_quiet(p)
            dead_letters = await p.stream_messages(subjects.DEADLETTER_STREAM)
        finally:
            if not sending.done():
                sending.cancel()
            readiness.stop()
            await sampler.stop()
            await ledger.stop()

        figures: dict[str, Any] = {
            "test": name, "submissions": SUBMISSIONS, "fault_s": window.seconds,
            "recovered_s": round(max(0.0, last - window.end), 1),
            "all_evaluated_after_fault_start_s": round(last - window.start, 1),
            "ready_again_s": {s: readiness.ready_again(s, window.end) for s in SERVICES},
            "not_ready_s": {s: readiness.not_ready_seconds(s, window.start, window.end + 30) for s in SERVICES},
            "outbox_max": sampler.max_outbox(),
            "re_placed_evaluations": ledger.re_placed_evaluations(),
            "republished_by_client": load.resent,
            "events": len(ledger.sequences),
            "total_s": round(time.monotonic() - began, 1),
            **window.figures,
        }
        FIGURES.append(figures)
        log(f"{name}: {figures}")

        assert ledger.problems() == []
        assert dead_letters == 0, f"{dead_letters} messages in {subjects.DEADLETTER_STREAM}"
        assert rows == {"ingest_submissions": SUBMISSIONS, "scoring_scores": SUBMISSIONS,
                        "alerts_scores": SUBMISSIONS}
        for service, process in p.services.items():
            assert process.alive, f"{service} exited:\n{process.log_tail()}"
            assert process.starts == 1 + (service in killed), f"{service} started {process.starts} times"
        for service in SERVICES:
            assert figures["ready_again_s"][service] is not None, f"{service} never ready again"
        if database:
            for service in SERVICES:
                check_not_ready_during(readiness, service, window)
        return figures


def check_not_ready_during(readiness: Readiness, service: str, window: Window) -> None:
    """503 within a few seconds of the fault's start, and nothing but 503 from then until it ended."""
    samples = readiness.during(service, window.start, window.end)
    first = next((s for s in samples if s.status == 503), None)
    assert first is not None, f"{service}: no 503 during the fault ({[s.status for s in samples]})"
    assert first.at - window.start <= NOT_READY_WITHIN, \
        f"{service}: first 503 only {first.at - window.start:.1f}s into the fault: " \
        f"{[(round(s.at - window.start, 1), s.status, s.took) for s in samples if s.at <= first.at]}"
    ready_meanwhile = [round(s.at - window.start, 1) for s in samples if s.at > first.at and s.status != 503]
    assert not ready_meanwhile, f"{service}: not 503 at {ready_meanwhile} s into the fault"
    assert any(not s.body or not s.body.get("database") for s in samples if s.status == 503), \
        f"{service}: the 503s did not name the database"


@pytest.mark.parametrize("service", SERVICES)
async def test_kill_9_of_a_service_mid_load(tmp_path: Path, postgres_admin_url: str, service: str) -> None:
    await run_under_fault(tmp_path, postgres_admin_url, f"kill -9 {service}", kill_service(service), killed=(service,))


async def test_kill_9_of_the_broker_mid_load(tmp_path: Path, postgres_admin_url: str) -> None:
    await run_under_fault(tmp_path, postgres_admin_url, "kill -9 nats-server", kill_broker)


@pytest.mark.parametrize("seconds", [10, 120])
async def test_database_connections_cut_mid_load(tmp_path: Path, postgres_admin_url: str, seconds: int) -> None:
    await run_under_fault(tmp_path, postgres_admin_url, f"database cut {seconds}s", database_fault("cut", seconds),
                          database=True)


async def test_database_hanging_mid_load(tmp_path: Path, postgres_admin_url: str) -> None:
    await run_under_fault(tmp_path, postgres_admin_url, "database hangs 20s", database_fault("hang", 20),
                          database=True)


# --- a three-node cluster (issue 16 item 5) -----------------------------------------------------

# as deploy/nats/cluster.conf: the services' /readyz then reports the broker's interval sync
CLUSTER_SETTINGS = {"RAPPORT_STREAM_REPLICAS": "3", "RAPPORT_BROKER_SYNC": "10s"}
BOTH_STREAMS = (subjects.EVENT_STREAM, subjects.INBOUND_STREAM)


async def replicated_and_led_from_one_node(p: Pipeline) -> None:
    """Every stream R3 with two followers online; RAPPORT_IN's leadership moved to the node leading
    RAPPORT, so that one kill takes both streams' leaders."""
    js = p.js_client.jetstream()
    for stream in (*BOTH_STREAMS, subjects.DEADLETTER_STREAM):
        info = await js.stream_info(stream)
        assert info.config.num_replicas == 3, f"{stream} has {info.config.num_replicas} replicas"
        assert info.cluster is not None and info.cluster.leader, f"{stream} has no leader"
        followers = info.cluster.replicas or []
        assert len(followers) == 2 and not any(f.offline for f in followers), f"{stream}: {followers}"
    event_leader = await leader_of(p.js_client, subjects.EVENT_STREAM)
    assert event_leader is not None, f"{subjects.EVENT_STREAM} has no leader"
    if await leader_of(p.js_client, subjects.INBOUND_STREAM) != event_leader:
        await lead_from(p.js_client, subjects.INBOUND_STREAM, event_leader)


def kill_stream_leader(cluster: NatsCluster, down_seconds: float = 3.0) -> Fault:
    async def fault(p: Pipeline) -> Window:
        leaders = {s: await leader_of(p.js_client, s) for s in BOTH_STREAMS}
        assert leaders[subjects.EVENT_STREAM] is not None, f"{subjects.EVENT_STREAM} has no leader"
        assert len(set(leaders.values())) == 1, f"the streams' leaders moved apart: {leaders}"
        leader = cluster.node(leaders[subjects.EVENT_STREAM])
        log(f"cluster: kill -9 {leader.name}, leader of {' and '.join(leaders)}")
        start = time.monotonic()
        leader.kill()

        async def new_leaders() -> bool:
            found = [await leader_of(p.js_client, s) for s in BOTH_STREAMS]
            return all(name not in (None, leader.name) for name in found)
        await eventually(new_leaders, 30, "other nodes lead both streams")
        elected = time.monotonic() - start
        await asyncio.sleep(down_seconds)  # the length of the fault: the node stays down a while
        cluster.restart(leader)
        return Window(start, time.monotonic(), {"leader_elected_s": round(elected, 1)})
    return fault


async def whole_again(p: Pipeline) -> None:
    """The restarted node back in both streams and caught up."""
    async def current() -> bool:
        for stream in BOTH_STREAMS:
            info = (await p.js_client.jetstream().stream_info(stream)).cluster
            followers = (info.replicas or []) if info is not None else []
            if len(followers) != 2 or not all(f.current and not f.offline for f in followers):
                return False
        return True
    await eventually(current, 60, "the restarted node current again in both streams")


async def test_kill_9_of_the_stream_leader_of_a_three_node_cluster_mid_load(
    tmp_path: Path, postgres_admin_url: str
) -> None:
    """The streams R3 (RAPPORT_STREAM_REPLICAS=3), the services on a comma-separated RAPPORT_BROKER_URL,
    the node leading RAPPORT and RAPPORT_IN killed a third of the way in and started again."""
    cluster = NatsCluster(tmp_path / "cluster")
    await run_under_fault(tmp_path, postgres_admin_url, "kill -9 stream leader", kill_stream_leader(cluster),
                          broker=cluster, settings=FAULT_SETTINGS | CLUSTER_SETTINGS,
                          before_load=replicated_and_led_from_one_node, after_quiet=whole_again)
