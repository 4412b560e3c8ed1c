"""`rapport bench`: submissions through a running pipeline, throughput and latency percentiles.

Latency is from the publish of a submission to the last event of its journey
(evaluation.completed from the alerts service). With --history H, every episode first gets H
sessions that are not measured, so evaluation cost with a long history can be compared with a
short one. Resident memory of each service is read from /proc when the stack runs here.

With --http, the same load is then sent through the gateway (POST /api/v1/submissions with a token
of role integration minted with the stack's key), timed from the POST to its 201, and set against
the broker path of the same run timed from the publish to ingest's answer (what the 201 waits
for): the ratio of the two throughputs is the cost of the HTTP door."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from nats.aio.msg import Msg

from rapport import baseline
from rapport.journeys import Journey, Journeys
from rapport.shared.db.engine import create_engine
from rapport.shared.messaging.broker import connect_client
from rapport.shared.settings import Settings
from rapport.stack import Stack, read_endpoints
from rapport.tenants import client_settings

T = TypeVar("T")

CONCURRENCY = 256
# HTTP requests in flight flat out: each holds a connection to the gateway until its answer. As many
# as the broker path keeps in flight, so the two doors get the same load (with 64, the HTTP path was
# bound by its latency, 64 / p50, not by what the gateway can take)
HTTP_CONCURRENCY = CONCURRENCY
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


async def _requests(send: Callable[[bytes], Coroutine[Any, Any, T]], bodies: list[bytes], rate: float,
                    concurrency: int) -> list[T]:
    """Every body sent as a request that waits for its answer: started at `rate` per second without
    waiting for earlier answers (an open loop, as clinic systems send), or flat out with
    `concurrency` requests in flight, each starting as another is answered."""
    if rate > 0:
        start = time.perf_counter()
        tasks: list[asyncio.Task[T]] = []
        for i, body in enumerate(bodies):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the load, not waiting for an outcome
            tasks.append(asyncio.create_task(send(body)))
        return list(await asyncio.gather(*tasks))
    results: list[T | None] = [None] * len(bodies)
    numbers = iter(range(len(bodies)))

    async def worker() -> None:
        for n in numbers:
            results[n] = await send(bodies[n])

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(bodies)))))
    return cast(list[T], results)


async def _publish_all(journeys: Journeys, bodies: list[bytes], rate: float) -> list[Journey]:
    return await _paced(journeys.submit, bodies, rate)


def _latency_summary(latencies: list[float]) -> dict[str, float | None]:
    return {
        "p50": round(percentile(latencies, 0.50) * 1000, 1) if latencies else None,
        "p95": round(percentile(latencies, 0.95) * 1000, 1) if latencies else None,
        "p99": round(percentile(latencies, 0.99) * 1000, 1) if latencies else None,
        "mean": round(statistics.fmean(latencies) * 1000, 1) if latencies else None,
    }


async def _drive(broker_url: str, signed_in: Settings, tenant: str, count: int, rate: float, history: int,
                 episodes: int, pids: dict[str, int]) -> dict[str, Any]:
    run = f"{int(time.time()) % 10**6}"  # fresh clients each run: a rerun is not a late submission
    journeys = await Journeys.connect(broker_url, tenant, signed_in)
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
        answer_latencies = [a for j in sent if (a := j.answer_latency) is not None]
        last_answer = max((j.answered for j in sent if j.answered), default=published)
        return {
            "count": count, "completed": len(finished), "rate_requested": rate or "flat out",
            "history_sessions": history, "episodes": episodes,
            "publish_seconds": round(published - started, 3),
            "seconds": round(last - started, 3),
            "throughput_per_s": round(len(finished) / (last - started), 1) if finished else 0.0,
            "latency_ms": _latency_summary(latencies),
            "answered": len(answer_latencies),
            "answers_per_s": round(len(answer_latencies) / (last_answer - started), 1) if answer_latencies else 0.0,
            "answer_latency_ms": _latency_summary(answer_latencies),
            "hop_latency_ms": _hop_latencies(finished),
            "rss_mb": memory,
            "cpu_ms_per_submission": {n: round((after[n] - before[n]) * 1000 / max(1, len(finished)), 2)
                                      for n in after if n in before},
            "idle_cpu_percent": {n: round((idle_to[n] - idle_from[n]) * 100 / IDLE_SECONDS, 1)
                                 for n in idle_to if n in idle_from},
        }
    finally:
        await journeys.close()


def _hop_latencies(finished: list[Journey]) -> dict[str, dict[str, float | None]]:
    """Where the time from publish to evaluation.completed goes: to ingest's answer, from it to the
    score, from the score to the evaluation (the journeys that were scored)."""
    marks = [(j.published, j.answered, j.scored, j.finished) for j in finished
             if j.answered is not None and j.scored is not None and j.finished is not None]
    return {
        "ingest": _latency_summary([answered - published for published, answered, _, _ in marks]),
        "scoring": _latency_summary([scored - answered for _, answered, scored, _ in marks]),
        "alerts": _latency_summary([done - scored for _, _, scored, done in marks]),
    }


async def _drive_baseline(broker_url: str, services: Settings, stored: Settings, count: int,
                          rate: float) -> dict[str, Any]:
    """The same load through the bare three-hop pipeline (rapport/baseline.py), on the same broker and
    database, signed in as the services are. `stored`: where the services keep their tables; each hop
    keeps its own as a service does (a file of its own on the embedded SQLite)."""
    run = f"b{int(time.time()) % 10**6}"
    connection = await connect_client(services, broker_url, name="rapport-bench-baseline")
    urls = [stored.database_url_of(baseline.service(hop)) for hop in range(1, baseline.HOPS + 1)]
    engines = [create_engine(url) for url in urls]
    processes: list[asyncio.subprocess.Process] = []
    try:
        js = connection.jetstream()
        await baseline.prepare(js, engines)
        env = {**os.environ, "RAPPORT_BROKER_URL": broker_url, "RAPPORT_LOG_LEVEL": "WARNING"}
        if services.broker_nkey_seed_file:  # the embedded stack's services' user
            env["RAPPORT_BROKER_NKEY_SEED_FILE"] = str(services.broker_nkey_seed_file)
        for hop, url in enumerate(urls, start=1):
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "rapport.baseline", str(hop), run, env={**env, "RAPPORT_DATABASE_URL": url},
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
        await baseline.remove(connection.jetstream(), engines)
        for engine in engines:
            await engine.dispose()
        await connection.close()


class HttpPoster:
    """A lean HTTP/1.1 client for the load: keep-alive connections to the gateway, each carrying one
    request at a time. httpx spent 3 ms of the bench's CPU per request with 16 connections and
    12 ms with 64, on the same two cores as the stack, which made the gateway look slower than it
    is; this spends a few hundred microseconds."""

    def __init__(self, base_url: str, path: str, headers: dict[str, str]) -> None:
        url = urlsplit(base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        lines = [f"POST {path} HTTP/1.1", f"Host: {url.netloc}", *(f"{k}: {v}" for k, v in headers.items())]
        self._head = "\r\n".join(lines).encode()
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._open: list[asyncio.StreamWriter] = []

    async def post(self, body: bytes) -> int:
        """The answer's status (the body is read and dropped); OSError when the gateway went away.
        A kept connection the gateway closed meanwhile (its keep-alive timeout) is replaced and the
        request sent again: a resend is the same message."""
        request = self._head + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        while self._idle:
            reader, writer = self._idle.pop()
            try:
                return await self._exchange(reader, writer, request)
            except (OSError, asyncio.IncompleteReadError):
                writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self._open.append(writer)
        return await self._exchange(reader, writer, request)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        length = next((int(v) for k, _, v in (h.partition(":") for h in header_lines)
                       if k.strip().lower() == "content-length"), 0)
        await reader.readexactly(length)
        if not any(h.lower().startswith("connection: close") for h in header_lines):
            self._idle.append((reader, writer))
        return int(status_line.split()[1])

    async def close(self) -> None:
        for writer in self._open:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _drive_http(gateway_url: str, bearer: str, count: int, rate: float, episodes: int,
                      pids: dict[str, int]) -> dict[str, Any]:
    """The same load as the broker path's, POSTed to the gateway's native endpoint; each request
    timed from its POST to its answer. Only a 201 counts as completed (a 202 waited the gateway's
    whole answer wait and is counted apart)."""
    run = f"h{int(time.time()) % 10**6}"
    episodes = min(episodes, count)
    start = datetime.now(UTC) - timedelta(days=count // episodes + 2)
    bodies = [_submission(run, n % episodes, n // episodes, start) for n in range(count)]
    http = HttpPoster(gateway_url, "/api/v1/submissions",
                      {"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"})
    try:

        async def send(body: bytes) -> tuple[str, float, float]:
            posted = time.perf_counter()
            try:
                status = str(await http.post(body))
            except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                status = type(error).__name__
            answered = time.perf_counter()
            return status, answered - posted, answered

        await send(_submission(run, episodes, 0, start))  # a connection and the tenant's subscription, unmeasured
        before = _cpu(pids)
        started = time.perf_counter()
        results = await _requests(send, bodies, rate, HTTP_CONCURRENCY)
        after = _cpu(pids)
    finally:
        await http.close()
    created = [(latency, at) for status, latency, at in results if status == "201"]
    last = max((at for _, at in created), default=started)
    statuses: dict[str, int] = {}
    for status, _, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "count": count, "completed": len(created), "statuses": statuses,
        "seconds": round(last - started, 3),
        "throughput_per_s": round(len(created) / (last - started), 1) if created else 0.0,
        "latency_ms": _latency_summary([latency for latency, _ in created]),
        "cpu_ms_per_submission": {n: round((after[n] - before[n]) * 1000 / max(1, len(created)), 2)
                                  for n in after if n in before},
    }


def integration_token(settings: Settings, tenant: str) -> str:
    """A bearer token of role integration for `tenant`, signed with the stack's key."""
    from rapport.services.gateway.tokens import load_signing_key, mint

    return mint(load_signing_key(settings.resolved_token_key_file()), tenant=tenant, role="integration",
                clinician=None, audience=settings.oidc_audience, now=datetime.now(UTC), ttl=timedelta(hours=2))


def run_bench(settings: Settings, *, count: int, rate: float, tenant: str, history: int, episodes: int,
              embedded: bool, broker_url: str | None, compare_baseline: bool = False,
              http: bool = False) -> dict[str, Any]:
    if embedded:
        with Stack(settings, quiet=True) as stack:
            pids = {s.name: s.process.pid for s in stack.services if s.process}
            result = asyncio.run(_drive(stack.broker_url, stack.client_settings(tenant), tenant, count, rate, history,
                                        episodes, pids))
            if http:
                gateway = next(s.url for s in stack.services if s.name == "gateway")
                result["http"] = asyncio.run(_drive_http(gateway, integration_token(settings, tenant), count, rate,
                                                         episodes, pids))
            if compare_baseline:
                result["baseline"] = asyncio.run(_drive_baseline(stack.broker_url, stack.client_settings(),
                                                                 stack.settings, count, rate))
    else:
        assert broker_url is not None
        endpoints = read_endpoints(settings.data_dir) or {}
        services = cast(dict[str, dict[str, Any]], endpoints.get("services", {}))
        pids = {name: int(info["pid"]) for name, info in services.items() if info.get("pid")}
        result = asyncio.run(_drive(broker_url, client_settings(settings, tenant), tenant, count, rate, history,
                                    episodes, pids))
        if http:
            gateway_url = endpoints.get("gateway")
            if not isinstance(gateway_url, str):
                raise RuntimeError(f"no gateway in {settings.data_dir / 'endpoints.json'}: start it with `rapport up`")
            result["http"] = asyncio.run(_drive_http(gateway_url, integration_token(settings, tenant), count, rate,
                                                     episodes, pids))
        if compare_baseline:
            result["baseline"] = asyncio.run(_drive_baseline(broker_url, client_settings(settings),
                                                             settings, count, rate))
    lat = result["latency_ms"]
    result["text"] = (
        f"{result['completed']}/{result['count']} submissions ({result['rate_requested']}/s requested, "
        f"{result['episodes']} episodes, {history} earlier sessions each) in {result['seconds']}s: "
        f"{result['throughput_per_s']}/s\n"
        f"latency publish -> evaluation.completed: p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms\n"
        "  of which (p50 / p99 ms): " + ", ".join(
            f"{hop} {hop_lat['p50']} / {hop_lat['p99']}" for hop, hop_lat in result["hop_latency_ms"].items()) + "\n"
        f"resident memory (MB): {result['rss_mb'] or 'not available'}\n"
        f"CPU per submission (ms): {result['cpu_ms_per_submission'] or 'not available'}; "
        f"idle CPU (% of a core, {IDLE_SECONDS:g}s before the run): {result['idle_cpu_percent'] or 'not available'}"
    )
    if (over_http := result.get("http")) is not None:
        alat, hlat = result["answer_latency_ms"], over_http["latency_ms"]
        share = over_http["throughput_per_s"] / result["answers_per_s"] if result["answers_per_s"] else 0.0
        result["http_share_of_broker"] = round(share, 2)
        result["text"] += (
            f"\nbroker path, publish -> ingest's answer: {result['answered']}/{result['count']}: "
            f"{result['answers_per_s']}/s; p50 {alat['p50']} ms, p95 {alat['p95']} ms, p99 {alat['p99']} ms\n"
            f"HTTP path, POST /api/v1/submissions -> 201: {over_http['completed']}/{over_http['count']} in "
            f"{over_http['seconds']}s: {over_http['throughput_per_s']}/s; p50 {hlat['p50']} ms, p95 {hlat['p95']} ms, "
            f"p99 {hlat['p99']} ms; answers {over_http['statuses']}; "
            f"CPU per submission (ms): {over_http['cpu_ms_per_submission']}\n"
            f"HTTP throughput as a share of the broker path's: {result['http_share_of_broker']} "
            f"(costs {round((1 - share) * 100)}%)"
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
