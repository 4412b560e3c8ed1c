"""`rapport bench`: submissions through a running pipeline, throughput and latency percentiles.

Latency is from the publish of a submission to the last event of its journey
(evaluation.completed from the alerts service). With --history H, every episode first gets H
sessions that are not measured, so evaluation cost with a long history can be compared with a
short one. Resident memory of each service is read from /proc when the stack runs here."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from nats.aio.msg import Msg

from rapport import baseline
from rapport.journeys import Journey, Journeys
from rapport.shared.db.engine import create_engine
from rapport.shared.messaging.broker import connect_client
from rapport.shared.settings import Settings
from rapport.stack import Stack, read_endpoints

T = TypeVar("T")

CONCURRENCY = 256
IDLE_SECONDS = 2.0


def _submission(run: str, episode: int, session: int, start: datetime) -> bytes:
    at = start + timedelta(days=session, seconds=episode)
    total = 18 - min(session, 12)
    items = [min(3, max(0, total // 9 + (1 if i < total % 9 else 0))) for i in range(9)]
    items[8] = 0
    return json.dumps({
        "submission_id": f"bench-{run}-e{episode}-s{session}", "instrument": "phq9",
        "client_id": f"client-{run}-{episode:05d}", "episode_id": f"episode-{run}-{episode:05d}",
        "clinician_id": f"clinician-b{episode % 20:02d}", "administered_at": at.isoformat(),
        "session": session, "responses": {str(i + 1): v for i, v in enumerate(items)},
    }).encode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process so far, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    return {name: seconds for name, pid in pids.items() if (seconds := cpu_seconds(pid)) is not None}


async def _paced(send: Callable[[bytes], Awaitable[T]], bodies: list[bytes], rate: float) -> list[T]:
    """Send every body, at `rate` per second, or flat out with CONCURRENCY publishes in flight."""
    sent: list[T] = []
    if rate > 0:
        start = time.perf_counter()
        for i, body in enumerate(bodies):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the load, not waiting for an outcome
            sent.append(await send(body))
        return sent
    for chunk in range(0, len(bodies), CONCURRENCY):
        sent += await asyncio.gather(*(send(b) for b in bodies[chunk : chunk + CONCURRENCY]))
    return sent


async def _publish_all(journeys: Journeys, bodies: list[bytes], rate: float) -> list[Journey]:
    return await _paced(journeys.submit, bodies, rate)


def _latency_summary(latencies: list[float]) -> dict[str, float | None]:
    return {
        "p50": round(percentile(latencies, 0.50) * 1000, 1) if latencies else None,
        "p95": round(percentile(latencies, 0.95) * 1000, 1) if latencies else None,
        "p99": round(percentile(latencies, 0.99) * 1000, 1) if latencies else None,
        "mean": round(statistics.fmean(latencies) * 1000, 1) if latencies else None,
    }


async def _drive(broker_url: str, tenant: str, count: int, rate: float, history: int, episodes: int,
                 pids: dict[str, int]) -> dict[str, Any]:
    run = f"{int(time.time()) % 10**6}"  # fresh clients each run: a rerun is not a late submission
    journeys = await Journeys.connect(broker_url, tenant)
    try:
        episodes = min(episodes, count)
        # one session a day, the last one yesterday: ingest refuses administrations in the future
        start = datetime.now(UTC) - timedelta(days=history + count // episodes + 2)
        if history:
            warm = [_submission(run, e, s, start) for s in range(history) for e in range(episodes)]
            done = await _publish_all(journeys, warm, 0)
            await asyncio.wait_for(asyncio.gather(*(j.done.wait() for j in done)), 600)
        bodies = [_submission(run, n % episodes, history + n // episodes, start) for n in range(count)]
        memory: dict[str, float] = {}
        idle_from = _cpu(pids)
        await asyncio.sleep(IDLE_SECONDS)  # what the services burn with nothing to do
        idle_to = before = _cpu(pids)
        started = time.perf_counter()
        sent = await _publish_all(journeys, bodies, rate)
        published = time.perf_counter()
        with contextlib.suppress(TimeoutError):  # what did not finish is reported as not completed
            await asyncio.wait_for(asyncio.gather(*(j.done.wait() for j in sent)), max(120, count / 50))
        for name, pid in pids.items():
            if (mb := rss_mb(pid)) is not None:
                memory[name] = round(mb, 1)
        after = _cpu(pids)
        finished = [j for j in sent if j.latency is not None]
        latencies = [j.latency for j in finished if j.latency is not None]
        last = max((j.finished for j in finished if j.finished), default=published)
        return {
            "count": count, "completed": len(finished), "rate_requested": rate or "flat out",
            "history_sessions": history, "episodes": episodes,
            "publish_seconds": round(published - started, 3),
            "seconds": round(last - started, 3),
            "throughput_per_s": round(len(finished) / (last - started), 1) if finished else 0.0,
            "latency_ms": _latency_summary(latencies),
            "rss_mb": memory,
            "cpu_ms_per_submission": {n: round((after[n] - before[n]) * 1000 / max(1, len(finished)), 2)
                                      for n in after if n in before},
            "idle_cpu_percent": {n: round((idle_to[n] - idle_from[n]) * 100 / IDLE_SECONDS, 1)
                                 for n in idle_to if n in idle_from},
        }
    finally:
        await journeys.close()


async def _drive_baseline(broker_url: str, database_url: str, count: int, rate: float) -> dict[str, Any]:
    """The same load through the bare three-hop pipeline (rapport/baseline.py), on the same broker and database."""
    run = f"b{int(time.time()) % 10**6}"
    connection = await connect_client(Settings(), broker_url, name="rapport-bench-baseline")
    engine = create_engine(database_url)
    processes: list[asyncio.subprocess.Process] = []
    try:
        js = connection.jetstream()
        await baseline.prepare(js, engine)
        env = {**os.environ, "RAPPORT_BROKER_URL": broker_url, "RAPPORT_DATABASE_URL": database_url,
               "RAPPORT_LOG_LEVEL": "WARNING"}
        for hop in range(1, baseline.HOPS + 1):
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "rapport.baseline", str(hop), run, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
            processes.append(process)
            assert process.stdout is not None
            if (await asyncio.wait_for(process.stdout.readline(), 60)).strip() != b"ready":
                raise RuntimeError(f"baseline hop {hop} did not start (exit code {process.returncode})")
        published: dict[str, float] = {}
        finished: dict[str, float] = {}
        all_done = asyncio.Event()

        async def arrived(msg: Msg) -> None:
            key = (msg.headers or {}).get(baseline.KEY, "")
            if key in published and key not in finished:
                finished[key] = time.perf_counter()
                if len(finished) == count:
                    all_done.set()

        await connection.subscribe(baseline.subject(run, baseline.HOPS), cb=arrived,
                                   pending_msgs_limit=10_000_000, pending_bytes_limit=2_000_000_000)
        await connection.flush()
        numbers = iter(range(count))

        async def send(body: bytes) -> str:
            key = f"{run}-{next(numbers)}"
            published[key] = time.perf_counter()
            await js.publish(baseline.subject(run, 0), body, headers={"Nats-Msg-Id": key, baseline.KEY: key},
                             timeout=30)
            return key

        pids = {f"hop{n + 1}": p.pid for n, p in enumerate(processes)}
        before = _cpu(pids)
        started = time.perf_counter()
        start = datetime.now(UTC) - timedelta(days=count // 200 + 2)
        await _paced(send, [_submission(run, n % 200, n // 200, start) for n in range(count)], rate)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_done.wait(), max(120, count / 50))
        after = _cpu(pids)
        last = max(finished.values(), default=started)
        latencies = [finished[k] - published[k] for k in finished]
        return {
            "count": count, "completed": len(finished), "seconds": round(last - started, 3),
            "throughput_per_s": round(len(finished) / (last - started), 1) if finished else 0.0,
            "latency_ms": _latency_summary(latencies),
            "cpu_ms_per_submission": {n: round((after[n] - before[n]) * 1000 / max(1, len(finished)), 2)
                                      for n in after if n in before},
        }
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 20)
        await baseline.remove(connection.jetstream(), engine)
        await engine.dispose()
        await connection.close()


def run_bench(settings: Settings, *, count: int, rate: float, tenant: str, history: int, episodes: int,
              embedded: bool, broker_url: str | None, compare_baseline: bool = False) -> dict[str, Any]:
    if embedded:
        with Stack(settings, quiet=True) as stack:
            pids = {s.name: s.process.pid for s in stack.services if s.process}
            result = asyncio.run(_drive(stack.broker_url, tenant, count, rate, history, episodes, pids))
            if compare_baseline:
                result["baseline"] = asyncio.run(_drive_baseline(stack.broker_url, stack.database_url, count, rate))
    else:
        assert broker_url is not None
        endpoints = read_endpoints(settings.data_dir) or {}
        services = cast(dict[str, dict[str, Any]], endpoints.get("services", {}))
        pids = {name: int(info["pid"]) for name, info in services.items() if info.get("pid")}
        result = asyncio.run(_drive(broker_url, tenant, count, rate, history, episodes, pids))
        if compare_baseline:
            result["baseline"] = asyncio.run(_drive_baseline(broker_url, settings.resolved_database_url(), count,
                                                             rate))
    lat = result["latency_ms"]
    result["text"] = (
        f"{result['completed']}/{result['count']} submissions ({result['rate_requested']}/s requested, "
        f"{result['episodes']} episodes, {history} earlier sessions each) in {result['seconds']}s: "
        f"{result['throughput_per_s']}/s\n"
        f"latency publish -> evaluation.completed: p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms\n"
        f"resident memory (MB): {result['rss_mb'] or 'not available'}\n"
        f"CPU per submission (ms): {result['cpu_ms_per_submission'] or 'not available'}; "
        f"idle CPU (% of a core, {IDLE_SECONDS:g}s before the run): {result['idle_cpu_percent'] or 'not available'}"
    )
    if (base := result.get("baseline")) is not None:
        share = result["throughput_per_s"] / base["throughput_per_s"] if base["throughput_per_s"] else 0.0
        result["share_of_baseline"] = round(share, 2)
        blat = base["latency_ms"]
        result["text"] += (
            f"\nbare three-hop pipeline, same broker and database: {base['completed']}/{base['count']} in "
            f"{base['seconds']}s: {base['throughput_per_s']}/s; p50 {blat['p50']} ms, p99 {blat['p99']} ms; "
            f"CPU per submission (ms): {base['cpu_ms_per_submission']}\n"
            f"Rapport's throughput as a share of the bare pipeline's: {result['share_of_baseline']}"
        )
    return result
