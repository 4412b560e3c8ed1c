"""The three services as processes, on a nats-server and a PostgreSQL database of the test's own,
under a bounded synthetic load, with everything a fault test needs to watch and check them.

- `Pipeline`: a nats-server (rapport.embedded_nats) in a tmp dir on a free port, a fresh migrated
  PostgreSQL database reached by the services through a `TcpProxy` (proxy.py), the three services
  started as `python -m rapport.cli serve <service>` with short timeouts, logs in the tmp dir.
- `Load`: native PHQ-9, GAD-7 and SRS submissions of synthetic clients, session by session,
  published at a steady rate with a bounded number in flight, each with its own Nats-Msg-Id, sent
  again with the same id while the broker does not acknowledge it.
- `Ledger`: a durable consumer of the tenant's events in the RAPPORT stream, from its first message:
  which event ids were stored at which stream sequences. Every event a submission should cause has
  an id derived from it (rapport.shared.contracts.envelope.derived_event_id), so "exactly once" is "that id
  at exactly one sequence", and completion is awaited as those events arrive.
- `Readiness`: each service's /readyz every 0.5 s, in threads, for the 503s a fault should cause.
- `Sampler`: outbox rows (and for the soak, connections and resident memory) every few seconds,
  read from the database directly, not through the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import nats
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from proxy import TcpProxy

from rapport.database import upgrade
from rapport.embedded_nats import EmbeddedNats, free_port
from rapport.shared.contracts.envelope import derived_event_id
from rapport.shared.messaging import subjects

SERVICES = ("ingest", "scoring", "alerts")
DURABLES = {"ingest": (subjects.INBOUND_STREAM, "ingest-v2"), "scoring": (subjects.EVENT_STREAM, "scoring-v2"),
            "alerts": (subjects.EVENT_STREAM, "alerts-v2")}
OUTBOXES = ("ingest_outbox", "scoring_outbox", "alerts_outbox")
# short bounds, so that a fault shows within a second or two (the brief of issue 8)
FAULT_SETTINGS = {
    "RAPPORT_STATEMENT_TIMEOUT_SECONDS": "2",
    "RAPPORT_TRANSACTION_TIMEOUT_SECONDS": "4",
    "RAPPORT_READINESS_TIMEOUT_SECONDS": "1",
    "RAPPORT_RETRY_BACKOFF_SECONDS": "[0.5,1,2]",
    "RAPPORT_LOG_LEVEL": "WARNING",
    # a batch a killed service had fetched comes back after this (the default is 60 s)
    "RAPPORT_ACK_WAIT_SECONDS": "10",
}
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
FIGURES: list[dict[str, Any]] = []  # one entry per fault test, for the summary (conftest.py)
SOAK_FIGURES: list[dict[str, Any]] = []


def servers(url: str) -> list[str]:
    """A broker URL as nats-py takes it: one server, or a cluster's comma-separated."""
    return [u.strip() for u in url.split(",") if u.strip()]


def log(line: str) -> None:
    """Progress for `pytest -s`; captured (and shown only on failure) otherwise."""
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str, interval: float = 0.5) -> None:
    """Wait for a condition on the broker's or the database's state, bounded."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:.0f}s: {what}")
        await asyncio.sleep(interval)


# --- the load ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    submission_id: str
    message_id: str
    body: bytes


def synthetic_submissions(count: int, *, sessions: int, seed: int = 8) -> list[Submission]:
    """`count` native submissions: clients with `sessions` weekly sessions of a PHQ-9, a GAD-7 and
    an SRS each, session by session across the clients (each series arrives in time order)."""
    rng = random.Random(seed)
    clients = -(-count // (3 * sessions))
    start = {c: (rng.randint(10, 22), rng.randint(8, 18), rng.choice((36.0, 38.0, 39.0))) for c in range(clients)}
    out: list[Submission] = []
    for s in range(sessions):
        for c in range(clients):
            phq_start, gad_start, srs_level = start[c]
            client, episode = f"client-{c:05d}", f"episode-{c:05d}-1"
            at = T0 + timedelta(days=7 * s, minutes=c % 600)
            phq = max(0, min(27, phq_start - 2 * s + rng.choice((-2, -1, 0, 1, 2))))
            gad = max(0, min(21, gad_start - s + rng.choice((-1, 0, 1))))
            srs = max(0.0, min(40.0, srs_level - (8 if c % 7 == 3 and s == sessions // 2 else 0)))
            for instrument, responses, at_ in (
                ("phq9", _spread(phq, 9, 3, rng, last_zero=c % 11 != 5), at),
                ("gad7", _spread(gad, 7, 3, rng), at + timedelta(minutes=2)),
                ("srs", _quarters(srs), at + timedelta(minutes=50)),
            ):
                sid = f"c{c:05d}-s{s + 1:02d}-{instrument}"
                body = json.dumps({
                    "submission_id": sid, "instrument": instrument, "client_id": client, "episode_id": episode,
                    "clinician_id": f"clinician-{c % 9:02d}", "administered_at": at_.isoformat(),
                    "session": s + 1, "responses": {str(i + 1): v for i, v in enumerate(responses)},
                }).encode()
                out.append(Submission(sid, f"msg-{sid}", body))
                if len(out) == count:
                    return out
    return out


def _spread(total: int, items: int, high: int, rng: random.Random, last_zero: bool = False) -> list[int]:
    slots = items - 1 if last_zero else items
    total = min(total, slots * high)
    values = [0] * items
    for _ in range(total):
        values[rng.choice([i for i in range(slots) if values[i] < high])] += 1
    return values


def _quarters(total: float) -> list[float]:
    quarter = round(total / 4, 1)
    return [quarter, quarter, quarter, round(total - 3 * quarter, 1)]


class Load:
    """Publishes submissions at `rate` per second, at most `in_flight` unacknowledged at once and, with
    `backlog`, at most that many published but not yet evaluated (`ledger`)."""

    def __init__(self, url: str, tenant: str, submissions: list[Submission], *, rate: float, in_flight: int = 64,
                 backlog: int | None = None, ledger: Ledger | None = None) -> None:
        self.url, self.tenant, self.submissions = url, tenant, submissions
        self.rate, self.in_flight, self.backlog, self.ledger = rate, in_flight, backlog, ledger
        self.acked = 0
        self.resent = 0
        self.started = 0.0
        self.finished = 0.0
        self._marks: list[tuple[int, asyncio.Event]] = []
        self._client: Client | None = None

    def reached(self, count: int) -> asyncio.Event:
        """Set once `count` submissions have been acknowledged by the broker."""
        event = asyncio.Event()
        self._marks.append((count, event))
        self._note()
        return event

    def _note(self) -> None:
        for count, event in self._marks:
            if self.acked >= count:
                event.set()

    async def run(self) -> None:
        self._client = await nats.connect(servers(self.url), name="faults-load", max_reconnect_attempts=-1,
                                          reconnect_time_wait=0.5, allow_reconnect=True)
        js = self._client.jetstream()
        subject = subjects.submissions_in(self.tenant)
        slots = asyncio.Semaphore(self.in_flight)
        tasks: set[asyncio.Task[None]] = set()

        async def send(submission: Submission) -> None:
            try:
                deadline = time.monotonic() + 300
                while True:
                    try:
                        await js.publish(subject, submission.body, headers={"Nats-Msg-Id": submission.message_id},
                                         timeout=5)
                        break
                    except Exception:  # the broker away or slow: the same message, the same id, again
                        if time.monotonic() > deadline:
                            raise
                        self.resent += 1
                        await asyncio.sleep(0.25)
                self.acked += 1
                self._note()
            finally:
                slots.release()

        self.started = time.monotonic()
        try:
            for n, submission in enumerate(self.submissions):
                if (delay := self.started + n / self.rate - time.monotonic()) > 0:
                    await asyncio.sleep(delay)  # pacing the load
                if self.backlog is not None and self.ledger is not None:
                    await self.ledger.wait_backlog(n, self.backlog)
                await slots.acquire()
                task = asyncio.create_task(send(submission))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*list(tasks))
        finally:
            self.finished = time.monotonic()
            await self._client.close()


# --- what reached the RAPPORT stream ----------------------------------------------------------


class Ledger:
    """Every event of the tenant in the RAPPORT stream, by stream sequence, through a durable consumer
    of the test's own (so a broker restart loses nothing of it)."""

    DURABLE = "faults-ledger"

    def __init__(self, url: str, tenant: str, submissions: list[Submission], *, only: str = ">") -> None:
        self.url, self.tenant = url, tenant
        self.filter = f"{subjects.PREFIX}.{tenant}.{only}"
        # the id of each event a submission should cause once: its answer, its score, its evaluation
        self.answer_of = {derived_event_id("submission.answer", tenant, s.message_id, 1): s.submission_id
                          for s in submissions}
        self.score_of = {derived_event_id("score.computed", tenant, s.submission_id, 1, ""): s.submission_id
                         for s in submissions}
        self.evaluation_of = {derived_event_id("evaluation.completed", tenant, s.submission_id, 1, ""):
                              s.submission_id for s in submissions}
        self.sequences: dict[int, tuple[str, str]] = {}  # stream sequence -> (subject, event id)
        self.at: dict[str, list[int]] = defaultdict(list)  # event id -> stream sequences
        self.evaluated_at: dict[str, float] = {}  # submission id -> when its evaluation arrived here
        self.errors = 0
        self._changed = asyncio.Event()
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._client = await nats.connect(servers(self.url), name="faults-ledger", max_reconnect_attempts=-1,
                                          reconnect_time_wait=0.5)
        await self._client.jetstream().add_consumer(subjects.EVENT_STREAM, ConsumerConfig(
            durable_name=self.DURABLE, filter_subject=self.filter, deliver_policy=DeliverPolicy.ALL,
            # explicit acks: with ack-all, acking a later batch also acked one the broker had sent into a
            # connection that died with it, and the ledger missed those events (a CI run's 30 'never scored')
            ack_policy=AckPolicy.EXPLICIT, ack_wait=10, max_ack_pending=100_000, max_deliver=-1))
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.close()

    async def _follow(self) -> None:
        assert self._client is not None
        subscription = None
        while True:
            try:
                if subscription is None:
                    subscription = await self._client.jetstream().pull_subscribe_bind(
                        self.DURABLE, stream=subjects.EVENT_STREAM)
                try:
                    messages = await subscription.fetch(1000, timeout=1)
                except TimeoutError:
                    continue
                for message in messages:
                    self._record(message.metadata.sequence.stream, message.subject,
                                 (message.headers or {}).get("Nats-Msg-Id", ""))
                    await message.ack()
                self._changed.set()
            except asyncio.CancelledError:
                raise
            except Exception:  # the broker away: bind again once it is back
                self.errors += 1
                subscription = None
                await asyncio.sleep(0.2)

    def _record(self, sequence: int, subject: str, event_id: str) -> None:
        if sequence in self.sequences:
            return  # a redelivery to the ledger, not a second event
        self.sequences[sequence] = (subject, event_id)
        self.at[event_id].append(sequence)
        submission = self.evaluation_of.get(event_id)
        if submission is not None and submission not in self.evaluated_at:
            self.evaluated_at[submission] = time.monotonic()

    @property
    def evaluated(self) -> int:
        return len(self.evaluated_at)

    async def wait_evaluated(self, count: int, within: float) -> None:
        """Until `count` submissions have their evaluation.completed in the stream."""
        async def enough() -> None:
            while self.evaluated < count:
                self._changed.clear()
                await self._changed.wait()
        try:
            await asyncio.wait_for(enough(), within)
        except TimeoutError:
            raise AssertionError(f"{self.evaluated}/{count} submissions evaluated after {within:.0f}s") from None

    async def wait_backlog(self, published: int, backlog: int) -> None:
        while published - self.evaluated > backlog:
            self._changed.clear()
            await self._changed.wait()

    def problems(self, checks: tuple[str, ...] = ("answered", "scored", "evaluated")) -> list[str]:
        """Each way in which the stream differs from "every submission answered, scored and evaluated
        exactly once, nothing doubled" (`checks`: those the ledger's filter lets it see)."""
        found = []
        doubled = {event_id: seqs for event_id, seqs in self.at.items() if len(seqs) > 1}
        if doubled:
            found.append(f"{len(doubled)} event ids stored more than once, e.g. {list(doubled.items())[:3]}")
        kinds = Counter(subject.split(".", 2)[2] for subject, _ in self.sequences.values())
        if kinds.get("submission.rejected"):
            found.append(f"{kinds['submission.rejected']} submissions rejected")
        for name, ids in (("answered", self.answer_of), ("scored", self.score_of), ("evaluated", self.evaluation_of)):
            if name not in checks:
                continue
            missing = sorted(sid for event_id, sid in ids.items() if event_id not in self.at)
            if missing:
                found.append(f"{len(missing)} submissions never {name}, e.g. {missing[:5]}")
        return found

    def re_placed_evaluations(self) -> int:
        """evaluation.completed events of scores re-sent because a late score came before them
        (scoring's placement, their own ids): by design, counted, not a second evaluation."""
        return sum(1 for subject, event_id in self.sequences.values()
                   if subject.endswith(".evaluation.completed") and event_id not in self.evaluation_of)


# --- readiness --------------------------------------------------------------------------------


@dataclass
class ReadySample:
    at: float
    status: int | None  # None: no answer (a killed process, a restart, or none within the poll's timeout)
    body: dict[str, Any] | None
    took: float = 0.0


class Readiness:
    """Each service's /readyz every `interval` seconds, one thread per service."""

    def __init__(self, services: dict[str, ServiceProcess], interval: float = 0.5) -> None:
        self.services, self.interval = services, interval
        self.samples: dict[str, list[ReadySample]] = {name: [] for name in services}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll, args=(name,), daemon=True, name=f"readyz-{name}")
                         for name in services]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _poll(self, name: str) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            status, body = self.services[name].readyz()
            self.samples[name].append(ReadySample(started, status, body, round(time.monotonic() - started, 2)))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def during(self, name: str, start: float, end: float) -> list[ReadySample]:
        return [s for s in list(self.samples[name]) if start <= s.at <= end]

    def ready_again(self, name: str, after: float) -> float | None:
        """Seconds from `after` to the first 200 from which the service stayed ready."""
        samples = [s for s in list(self.samples[name]) if s.at >= after]
        first = None
        for sample in samples:
            if sample.status != 200:
                first = None
            elif first is None:
                first = sample.at
        return None if first is None else round(first - after, 1)

    def not_ready_seconds(self, name: str, start: float, end: float) -> float:
        """How long, between `start` and `end`, the service answered anything but 200 (each answer
        standing until the next one: a probe can take the whole readiness timeout)."""
        samples = self.during(name, start, end)
        if not samples:
            return 0.0
        end = min(end, samples[-1].at + self.interval)
        spans = zip(samples, [*[s.at for s in samples[1:]], end], strict=True)
        return round(sum(until - sample.at for sample, until in spans if sample.status != 200), 1)


# --- processes, database, proxy ---------------------------------------------------------------


@dataclass
class ServiceProcess:
    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    pids: list[int] = field(default_factory=list)

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "rapport.cli", "serve", self.name, "--port", str(self.port)],
                env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        self.starts += 1
        self.pids.append(self.process.pid)

    def kill(self) -> None:
        """kill -9: no shutdown, no acks, nothing flushed."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def readyz(self, timeout: float = 3.0) -> tuple[int | None, dict[str, Any] | None]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            with contextlib.suppress(Exception):
                return error.code, json.loads(error.read())
            return error.code, None
        except (OSError, ValueError):
            return None, None

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


class Database:
    """A fresh PostgreSQL database, migrated, dropped at the end; `direct` bypasses the proxy."""

    def __init__(self, admin_url: str) -> None:
        raw = admin_url.replace("postgresql+asyncpg://", "postgresql://").replace("postgres://", "postgresql://")
        self.admin = raw
        parts = urlsplit(raw)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 5432
        self.userinfo = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
        self.name = f"rapport_faults_{uuid.uuid4().hex[:10]}"
        self.direct = f"postgresql://{self.userinfo}@{self.host}:{self.port}/{self.name}"

    def via(self, host: str, port: int) -> str:
        return f"postgresql://{self.userinfo}@{host}:{port}/{self.name}"

    async def create(self) -> None:
        connection = await asyncpg.connect(self.admin)
        try:
            await connection.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await connection.close()
        await upgrade(self.direct.replace("postgresql://", "postgresql+asyncpg://"))

    async def drop(self) -> None:
        connection = await asyncpg.connect(self.admin)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await connection.close()


class Sampler:
    """Every `interval` seconds: outbox rows per service; with `resources`, also the database's
    connections and each service's resident memory."""

    def __init__(self, database: Database, services: dict[str, ServiceProcess], *, interval: float,
                 resources: bool = False) -> None:
        self.database, self.services, self.interval, self.resources = database, services, interval, resources
        self.samples: list[dict[str, Any]] = []
        self.errors = 0
        self._task: asyncio.Task[None] | None = None
        self._connection: asyncpg.Connection | None = None
        # one connection, used by the sampling task and by the test's own counts: one query at a time
        self._using = asyncio.Lock()
        self.progress: Callable[[], dict[str, Any]] | None = None

    async def start(self) -> None:
        self._connection = await asyncpg.connect(self.database.direct)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._connection is not None:
            await self._connection.close()

    async def outboxes(self) -> dict[str, int]:
        assert self._connection is not None
        async with self._using:
            row = await self._connection.fetchrow("SELECT " + ", ".join(
                f"(SELECT count(*) FROM {table}) AS {table}" for table in OUTBOXES))
        assert row is not None
        return {table: int(row[table]) for table in OUTBOXES}

    async def count(self, query: str, *args: Any) -> int:
        assert self._connection is not None
        async with self._using:
            return int(await self._connection.fetchval(query, *args))

    async def _run(self) -> None:
        assert self._connection is not None
        while True:
            try:
                sample: dict[str, Any] = {"at": time.monotonic(), **await self.outboxes()}
                if self.resources:
                    sample["connections"] = await self.count(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                        self.database.name)
                    for name, service in self.services.items():
                        sample[f"rss_{name}"] = rss_mb(service.process.pid) if service.process else None
                if self.progress is not None:
                    sample |= self.progress()
                self.samples.append(sample)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors += 1
            await asyncio.sleep(self.interval)

    def max_outbox(self) -> dict[str, int]:
        return {table.split("_")[0]: max((s[table] for s in self.samples), default=0) for table in OUTBOXES}


def rss_mb(pid: int) -> float | None:
    """VmRSS from /proc (psutil is not installed here)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def service_environment(broker_url: str, database_url: str, tenant: str, data_dir: Path,
                        extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAPPORT_")}
    env |= {"RAPPORT_BROKER_URL": broker_url, "RAPPORT_DATABASE_URL": database_url,
            "RAPPORT_DATA_DIR": str(data_dir), "RAPPORT_LICENSED_INSTRUMENTS": f"{tenant}:srs", **extra}
    return env


@dataclass
class Pipeline:
    tmp: Path
    tenant: str
    nats: EmbeddedNats
    database: Database
    proxy: TcpProxy | None
    services: dict[str, ServiceProcess]
    js_client: Client

    @property
    def broker_url(self) -> str:
        return self.nats.url

    async def wait_ready(self, names: tuple[str, ...] = SERVICES, within: float = 90) -> None:
        async def all_ready() -> bool:
            for name in names:
                service = self.services[name]
                if not service.alive:
                    raise AssertionError(f"{name} exited ({service.process and service.process.returncode}):\n"
                                         f"{service.log_tail()}")
                status, _ = await asyncio.to_thread(service.readyz)
                if status != 200:
                    return False
            return True
        await eventually(all_ready, within, f"{', '.join(names)} ready", interval=0.25)

    def kill_broker(self) -> None:
        assert self.nats.process is not None
        self.nats.process.kill()
        self.nats.process.wait(10)

    def restart_broker(self) -> None:
        self.nats.start()  # the same port, the same store dir

    async def consumer_state(self, service: str) -> tuple[int, int]:
        stream, durable = DURABLES[service]
        info = await self.js_client.jetstream().consumer_info(stream, durable)
        return info.num_pending or 0, info.num_ack_pending or 0

    async def stream_messages(self, stream: str) -> int:
        return int((await self.js_client.jetstream().stream_info(stream)).state.messages)

    async def quiet(self, sampler: Sampler, ledger: Ledger) -> bool:
        """Nothing left to do anywhere: no outbox row, no message pending or unacknowledged for any
        service, the work queue empty, and the ledger has read all there is."""
        try:
            if any((await sampler.outboxes()).values()):
                return False
            for service in SERVICES:
                if any(await self.consumer_state(service)):
                    return False
            if await self.stream_messages(subjects.INBOUND_STREAM):
                return False
            info = await self.js_client.jetstream().consumer_info(subjects.EVENT_STREAM, ledger.DURABLE)
            return not info.num_pending and not info.num_ack_pending
        except Exception:  # the broker or the database still coming back
            return False

    async def rows(self, sampler: Sampler) -> dict[str, int]:
        return {table: await sampler.count(f"SELECT count(*) FROM {table} WHERE tenant = $1", self.tenant)
                for table in ("ingest_submissions", "scoring_scores", "alerts_scores")}


@asynccontextmanager
async def pipeline(tmp: Path, admin_url: str, *, with_proxy: bool = True,
                   settings: dict[str, str] = FAULT_SETTINGS, broker: Any = None) -> AsyncIterator[Pipeline]:
    """`broker`: anything with start(), stop(), url and process (a cluster.NatsCluster); by default
    one nats-server of the test's own."""
    tenant = f"f{uuid.uuid4().hex[:10]}"
    broker = broker if broker is not None else EmbeddedNats(tmp, port=free_port())
    database = Database(admin_url)
    proxy: TcpProxy | None = None
    services: dict[str, ServiceProcess] = {}
    client: Client | None = None
    await database.create()
    try:
        broker.start()
        if with_proxy:
            proxy = TcpProxy(database.host, database.port).start()
            database_url = database.via("127.0.0.1", proxy.port)
        else:
            database_url = database.direct
        env = service_environment(broker.url, database_url, tenant, tmp / "data", settings)
        (tmp / "data").mkdir(exist_ok=True)
        for name in SERVICES:
            services[name] = ServiceProcess(name, free_port(), env, tmp / f"{name}.log")
            services[name].start()
        client = await nats.connect(servers(broker.url), name="faults-check", max_reconnect_attempts=-1,
                                    reconnect_time_wait=0.5)
        running = Pipeline(tmp, tenant, broker, database, proxy, services, client)
        await running.wait_ready()
        yield running
    finally:
        for service in services.values():
            service.stop()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
        broker.stop()
        if proxy is not None:
            proxy.close()
        await database.drop()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
