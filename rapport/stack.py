"""`rapport up`: broker, database and the three services as three supervised processes.

With RAPPORT_BROKER_URL / RAPPORT_DATABASE_URL set, those are used; otherwise the embedded NATS and
a SQLite file under the data dir. The endpoints are written to <data dir>/endpoints.json so other
commands (`rapport submit`, `rapport bench`) find the running stack."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from rapport.database import upgrade
from rapport.embedded_nats import EmbeddedNats, free_port
from shared.settings import Settings

SERVICES = ("ingest", "scoring", "alerts")
ENDPOINTS_FILE = "endpoints.json"


@dataclass
class ServiceProcess:
    name: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

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


@dataclass
class Stack:
    settings: Settings
    quiet: bool = False
    nats: EmbeddedNats | None = None
    broker_url: str = ""
    database_url: str = ""
    services: list[ServiceProcess] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir.resolve()

    def say(self, line: str) -> None:
        if not self.quiet:
            print(line, flush=True)

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.settings.broker_url:
            self.broker_url = self.settings.broker_url
        else:
            self.nats = EmbeddedNats(self.data_dir)
            self.nats.start()
            self.broker_url = self.nats.url
        self.database_url = self.settings.resolved_database_url()
        asyncio.run(upgrade(self.database_url))
        self.services = [ServiceProcess(name, free_port()) for name in SERVICES]
        for service in self.services:
            self._spawn(service)
        for service in self.services:
            self._wait_ready(service)
        self._write_endpoints()
        self.say(f"broker    {self.broker_url}" + ("  (embedded)" if self.nats else ""))
        self.say(f"database  {redact(self.database_url)}")
        for service in self.services:
            self.say(f"{service.name:<9} {service.url}  (/healthz /readyz /metrics)")
        self.say(f"endpoints {self.data_dir / ENDPOINTS_FILE}")

    def _environment(self) -> dict[str, str]:
        env = os.environ.copy()
        env["RAPPORT_BROKER_URL"] = self.broker_url
        env["RAPPORT_DATABASE_URL"] = self.database_url
        env["RAPPORT_DATA_DIR"] = str(self.data_dir)
        return env

    def _spawn(self, service: ServiceProcess) -> None:
        log = (self.data_dir / f"{service.name}.log").open("ab")
        service.process = subprocess.Popen(
            [sys.executable, "-m", "rapport.cli", "serve", service.name, "--port", str(service.port)],
            env=self._environment(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
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
        endpoints = {
            "broker_url": self.broker_url,
            "database": redact(self.database_url),
            "services": {s.name: {"url": s.url, "pid": s.process.pid if s.process else None} for s in self.services},
        }
        (self.data_dir / ENDPOINTS_FILE).write_text(json.dumps(endpoints, indent=2))

    def supervise(self, stop: asyncio.Event | None = None, max_restarts: int = 5) -> None:
        """Wait for SIGINT/SIGTERM; restart a service that dies, a bounded number of times."""
        stopping = {"now": False}

        def request_stop(signum: int, _frame: object) -> None:
            stopping["now"] = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        while not stopping["now"]:
            for service in self.services:
                assert service.process is not None
                if service.process.poll() is not None:
                    if service.restarts >= max_restarts:
                        self.say(f"{service.name} keeps exiting; stopping the stack")
                        stopping["now"] = True
                        break
                    service.restarts += 1
                    self.say(f"{service.name} exited ({service.process.returncode}); restarting")
                    self._spawn(service)
            time.sleep(0.2)

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
