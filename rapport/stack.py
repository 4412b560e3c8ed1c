"""`rapport up`: broker, database and the four services (ingest, scoring, alerts, gateway) as
supervised processes.

With RAPPORT_BROKER_URL / RAPPORT_DATABASE_URL set, those are used; otherwise the embedded NATS and
a SQLite file under the data dir. The endpoints are written to <data dir>/endpoints.json so other
commands (`rapport submit`, `rapport bench`) find the running stack; its top-level `gateway` is the
gateway's base URL. Before the services start, the token signing key the gateway verifies with
(and `rapport token` signs with) is created in the data dir if it is not there.

Files are closed by default: the process umask is 0o077 from the start (the services and the broker
inherit it), the data dir is 0700 and every file in it 0600. Before the services start, the
embedded broker's sync setting is read back from the running server and `rapport up` refuses to go
on if it is not what RAPPORT_BROKER_SYNC asked for; the `durability` line says what an
acknowledgement means for broker and database."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rapport.database import upgrade
from rapport.embedded_nats import EmbeddedNats, free_port
from rapport.services.gateway.tokens import create_signing_key
from rapport.shared.db.engine import create_engine
from rapport.shared.durability import broker_policy, database_policy
from rapport.shared.messaging.broker import without_credentials
from rapport.shared.settings import Settings
from rapport.tenants import (
    EMBEDDED_BROKER,
    SERVICES_SEED,
    USERS_CONFIG,
    TenantRegistry,
    client_settings,
    reload_embedded_broker,
    services_seed,
    write_users_config,
)

SERVICES = ("ingest", "scoring", "alerts", "gateway")
ENDPOINTS_FILE = "endpoints.json"
# what `rapport up` keeps in the data dir (SQLite files with -wal/-shm: one per service, or the one
# of earlier releases, and the bench's bare pipeline's; logs, broker config and store)
OWN_FILES = ("rapport.db*", *(f"{name}.db*" for name in SERVICES), "baseline-*.db*", "*.log", ENDPOINTS_FILE,
             "nats-server.conf", "nats", "token-signing-key.pem", USERS_CONFIG, SERVICES_SEED, "tenants")


@dataclass
class ServiceProcess:
    name: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    # when it exited, for the exits still inside the restart policy's window
    crashes: tuple[float, ...] = ()
    # set while a restart waits out its delay
    restart_at: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def redact(url: str) -> str:
    """Database URLs can carry a password: never print or write it."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}" if ":" in credentials else url
    return url


class StackError(RuntimeError):
    """The stack cannot start as asked; the message says why and what to do."""


@dataclass(frozen=True)
class RestartPolicy:
    """More than `max_crashes` exits of one service within `window_seconds` stop the stack; below
    that a service is restarted after `first_delay_seconds`, doubled for each earlier exit still in
    the window, at most `max_delay_seconds`. A service that exits once a day is restarted forever."""

    max_crashes: int = 5
    window_seconds: float = 300.0
    first_delay_seconds: float = 1.0
    max_delay_seconds: float = 30.0


@dataclass(frozen=True)
class RestartDecision:
    restart: bool
    delay: float
    crashes: tuple[float, ...]  # the exits inside the window, this one last


def after_exit(crashes: Sequence[float], now: float, policy: RestartPolicy) -> RestartDecision:
    """What to do about a service that just exited at `now`, given its earlier exits. Pure."""
    recent = (*(t for t in crashes if now - t < policy.window_seconds), now)
    if len(recent) > policy.max_crashes:
        return RestartDecision(restart=False, delay=0.0, crashes=recent)
    delay = min(policy.max_delay_seconds, policy.first_delay_seconds * 2 ** (len(recent) - 1))
    return RestartDecision(restart=True, delay=delay, crashes=recent)


def close_data_dir(data_dir: Path) -> None:
    """Umask 0o077 for this process and its children from now on; the data dir 0700 (which alone
    closes everything in it), and the files an earlier run of Rapport left there owner-only. Only
    Rapport's own names are touched, in case the data dir was pointed at a directory shared with
    other things."""
    os.umask(0o077)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    for pattern in OWN_FILES:
        for path in data_dir.glob(pattern):
            mode = path.lstat().st_mode
            if not path.is_symlink() and mode & 0o077:
                path.chmod(mode & 0o700)


async def read_database_policy(url: str) -> str:
    engine = create_engine(url)
    try:
        return await database_policy(engine)
    finally:
        await engine.dispose()


def durability_line(*, broker_sync: str, embedded: bool, database: str) -> str:
    """`rapport up`'s statement of what an acknowledgement means (the embedded broker's setting as
    read back from it; an external broker's as configured here, which its operator must match)."""
    broker = broker_policy(broker_sync)
    if embedded:
        broker += " (embedded, single node"
        if broker_sync != "always":
            broker += f"; a power failure can lose what was acknowledged in the last {broker_sync}"
        broker += ")"
    else:
        broker += " (external: as set by RAPPORT_BROKER_SYNC, configure the server to match)"
    if database.startswith("postgresql") and ("fsync=off" in database or "synchronous_commit=off" in database):
        database += " (a crash of the database can lose acknowledged commits)"
    return f"durability  broker {broker}, database {database}"


@dataclass
class Stack:
    settings: Settings
    quiet: bool = False
    nats: EmbeddedNats | None = None
    broker_url: str = ""
    database_urls: dict[str, str] = field(default_factory=dict)  # each service's (Settings.database_url_of)
    services: list[ServiceProcess] = field(default_factory=list)
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    clock: Callable[[], float] = time.monotonic
    durability: str = ""
    _tenants_at_start: list[str] = field(default_factory=list, init=False)
    banner: TextIO | None = None  # where the startup lines go: stdout unless given (`rapport evaluate`: stderr)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir.resolve()

    def say(self, line: str) -> None:
        if not self.quiet:
            print(line, file=self.banner or sys.stdout, flush=True)

    def start(self) -> None:
        close_data_dir(self.data_dir)  # before anything is created in it
        if self.settings.broker_url:
            self.broker_url = self.settings.broker_url
        else:
            # authorization on: the services' user and each registered tenant's (rapport/tenants.py)
            registry = TenantRegistry.of(self.data_dir)
            with registry.locked():
                write_users_config(self.data_dir)
                self._tenants_at_start = [user.tenant for user in registry.users()]
                self.nats = EmbeddedNats(self.data_dir, sync=self.settings.broker_sync, users=USERS_CONFIG)
                self.nats.start()
            self.broker_url = self.nats.url
            try:
                self.nats.verify_sync()
            except Exception as error:  # a mismatch, or a monitoring endpoint that does not answer
                raise StackError(f"not starting: {error}") from error
        self.database_urls = {name: self.settings.database_url_of(name) for name in SERVICES}
        for url in dict.fromkeys(self.database_urls.values()):
            asyncio.run(upgrade(url))
            database = asyncio.run(read_database_policy(url))
            if database.startswith("sqlite") and database != "sqlite synchronous=FULL":
                raise StackError(f"not starting: {database}, expected synchronous=FULL (shared/db/engine.py)")
        self.durability = durability_line(broker_sync=self.settings.broker_sync, embedded=self.nats is not None,
                                          database=database)
        key = self.settings.resolved_token_key_file()
        if not self.settings.oidc_issuer and create_signing_key(key):
            self.say(f"created the token signing key {key} (rapport token signs with it)")
        self.services = [ServiceProcess(name, free_port(self.settings.gateway_port if name == "gateway" else None))
                         for name in SERVICES]
        for service in self.services:
            self._spawn(service)
        for service in self.services:
            self._wait_ready(service)
        self._write_endpoints()
        self._install_tenants_added_meanwhile()
        self.say(f"broker    {without_credentials(self.broker_url)}" +
                 ("  (embedded, sign-in per tenant: rapport tenants list)" if self.nats else ""))
        self.say(f"database  {self.database_line()}")
        self.say(self.durability)
        for service in self.services:
            routes = "(/fhir /api/v1 /healthz /readyz /metrics)" if service.name == "gateway" else \
                "(/healthz /readyz /metrics)"
            self.say(f"{service.name:<9} {service.url}  {routes}")
        self.say(f"endpoints {self.data_dir / ENDPOINTS_FILE}")

    def database_line(self) -> str:
        urls = set(self.database_urls.values())
        if len(urls) == 1:
            return redact(urls.pop())
        return f"sqlite, a file per service in {self.data_dir}: " + ", ".join(
            url.rsplit("/", 1)[-1] for url in self.database_urls.values())

    def client_settings(self, tenant: str | None = None) -> Settings:
        """How this process's own clients (demo, evaluate, bench) sign in: as `tenant`, or as the services."""
        return client_settings(self.settings.model_copy(update={"broker_url": None if self.nats else self.broker_url}),
                               tenant)

    def _install_tenants_added_meanwhile(self) -> None:
        """A tenant added between the broker's start and endpoints.json (where `rapport tenants add`
        finds the broker to reload) is installed now."""
        if self.nats is None or self.nats.process is None:
            return
        registry = TenantRegistry.of(self.data_dir)
        with registry.locked():
            if [user.tenant for user in registry.users()] != self._tenants_at_start:
                write_users_config(self.data_dir)
                reload_embedded_broker({"pid": self.nats.process.pid, "monitor": self.nats.monitor_url})

    def _environment(self, service: str) -> dict[str, str]:
        env = os.environ.copy()
        if self.nats is not None:  # the embedded broker's services' user, and no other way of signing in
            for name in ("USER", "PASSWORD", "PASSWORD_FILE", "CREDS", "INBOX_PREFIX"):
                env.pop(f"RAPPORT_BROKER_{name}", None)
            env["RAPPORT_BROKER_NKEY_SEED_FILE"] = str(services_seed(self.data_dir))
        env["RAPPORT_BROKER_URL"] = self.broker_url
        env["RAPPORT_DATABASE_URL"] = self.database_urls[service]
        env["RAPPORT_DATA_DIR"] = str(self.data_dir)
        return env

    def _spawn(self, service: ServiceProcess) -> None:
        with (self.data_dir / f"{service.name}.log").open("ab") as log:  # the child keeps its own copy
            service.process = subprocess.Popen(
                [sys.executable, "-m", "rapport.cli", "serve", service.name, "--port", str(service.port)],
                env=self._environment(service.name), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )

    def _wait_ready(self, service: ServiceProcess, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert service.process is not None
            if service.process.poll() is not None:
                raise RuntimeError(
                    f"{service.name} exited with code {service.process.returncode}; "
                    f"see {self.data_dir / (service.name + '.log')}"
                )
            try:
                with urllib.request.urlopen(f"{service.url}/readyz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{service.name} not ready after {timeout:.0f}s")

    def _write_endpoints(self) -> None:
        endpoints: dict[str, object] = {
            "broker_url": without_credentials(self.broker_url),
            "database": self.database_line(),
            "services": {s.name: {"url": s.url, "pid": s.process.pid if s.process else None} for s in self.services},
            "gateway": next((s.url for s in self.services if s.name == "gateway"), None),
        }
        if self.nats is not None and self.nats.process is not None:  # where `rapport tenants add` installs a tenant
            endpoints[EMBEDDED_BROKER] = {"pid": self.nats.process.pid, "monitor": self.nats.monitor_url}
        # replaced whole, so a reader never sees half a file (it is rewritten when a service restarts)
        path = self.data_dir / ENDPOINTS_FILE
        partial = path.with_name(f".{ENDPOINTS_FILE}.{os.getpid()}")
        partial.write_text(json.dumps(endpoints, indent=2))
        partial.replace(path)

    def supervise(self, poll_seconds: float = 0.2) -> str | None:
        """Until SIGINT/SIGTERM: restart a service that exits, per `restart_policy`. Returns None
        when asked to stop, or the reason when a service exits too often and the stack must stop."""
        stopping = {"now": False}

        def request_stop(signum: int, _frame: object) -> None:
            stopping["now"] = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        while not stopping["now"]:
            reason = self.supervise_step()
            if reason is not None:
                return reason
            time.sleep(poll_seconds)
        return None

    def supervise_step(self) -> str | None:
        """One look at every service at `self.clock()`: note exits, start restarts that are due.
        Returns the reason to stop the stack, if there is one."""
        now = self.clock()
        for service in self.services:
            if service.restart_at is not None:
                if now >= service.restart_at:
                    service.restart_at = None
                    service.restarts += 1
                    self._spawn(service)
                    self._write_endpoints()
                continue
            assert service.process is not None
            code = service.process.poll()
            if code is None:
                continue
            decision = after_exit(service.crashes, now, self.restart_policy)
            service.crashes = decision.crashes
            window = f"{self.restart_policy.window_seconds:g}s"
            log = self.data_dir / f"{service.name}.log"
            if not decision.restart:
                reason = (f"{service.name} exited {len(decision.crashes)} times within {window} (last code {code}); "
                          f"stopping the stack; see {log}")
                self.say(reason)
                return reason
            self.say(f"{service.name} exited ({code}); restarting in {decision.delay:g}s "
                     f"({len(decision.crashes)} exits within {window}; see {log})")
            service.restart_at = now + decision.delay
        return None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM each service (they finish in-flight batches and ack), then the broker."""
        for service in self.services:
            if service.process and service.process.poll() is None:
                service.process.terminate()
        for service in self.services:
            if service.process is None:
                continue
            try:
                service.process.wait(timeout)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()
        if self.nats:
            self.nats.stop()
        endpoints = self.data_dir / ENDPOINTS_FILE
        endpoints.unlink(missing_ok=True)
        self.say("stopped")

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def read_endpoints(data_dir: Path) -> dict[str, object] | None:
    path = data_dir / ENDPOINTS_FILE
    return json.loads(path.read_text()) if path.exists() else None
