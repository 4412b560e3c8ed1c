"""Acknowledged means on disk (design principle 11): the embedded broker syncs every write before
acknowledging it, as read back from the running server; SQLite runs synchronous=FULL; `rapport up`
says so in its `durability` line and in each service's /readyz, and keeps its files to its owner.

Every broker here is an EmbeddedNats of its own on a free loopback port (never 4222)."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from rapport.database import upgrade
from rapport.embedded_nats import (
    BrokerSyncMismatch,
    EmbeddedNats,
    effective_sync,
    format_interval_ns,
    sync_interval_ns,
    sync_matches,
)
from rapport.shared.db.engine import create_engine
from rapport.stack import SERVICES, durability_line

SHARED_NATS_PORT = 4222  # another session's broker: nothing here may use it


# --- reading the server's answer (pure) ----------------------------------------------------------

def test_varz_jetstream_config_is_read_as_the_server_reports_it() -> None:
    # the shapes nats-server 2.15.1 answers in /varz jetstream.config
    always = {"store_dir": "/x/jetstream", "sync_interval": 120_000_000_000, "sync_always": True}
    every_2m = {"store_dir": "/x/jetstream", "sync_interval": 120_000_000_000}
    assert effective_sync(always) == "always" and sync_matches("always", always)
    assert effective_sync(every_2m) == "2m" and sync_matches("2m", every_2m) and sync_matches("120s", every_2m)
    assert not sync_matches("always", every_2m) and not sync_matches("2m", always)
    assert not sync_matches("10s", every_2m)
    assert effective_sync({}) == "unknown" and not sync_matches("always", {})
    assert [format_interval_ns(sync_interval_ns(s)) for s in ("10s", "90s", "1500ms", "2h")] == [
        "10s", "90s", "1500ms", "2h"]


def test_the_durability_line_names_both_policies() -> None:
    assert durability_line(broker_sync="always", embedded=True, database="sqlite synchronous=FULL") == (
        "durability  broker fsync always (embedded, single node), database sqlite synchronous=FULL")
    assert durability_line(broker_sync="always", embedded=False,
                           database="postgresql fsync=on synchronous_commit=on") == (
        "durability  broker fsync always (external: as set by RAPPORT_BROKER_SYNC, configure the server to "
        "match), database postgresql fsync=on synchronous_commit=on")
    interval = durability_line(broker_sync="2m", embedded=True, database="sqlite synchronous=FULL")
    assert interval.startswith("durability  broker fsync every 2m (embedded, single node; a power failure")
    assert "can lose acknowledged" in durability_line(
        broker_sync="always", embedded=False, database="postgresql fsync=on synchronous_commit=off")


# --- the embedded broker, running -----------------------------------------------------------------

@pytest.fixture
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path, sync=getattr(request, "param", "always"))
    assert server.port != SHARED_NATS_PORT
    server.start(timeout=20)
    try:
        yield server
    finally:
        server.stop(timeout=10)


def test_the_embedded_broker_syncs_every_write(broker: EmbeddedNats, tmp_path: Path) -> None:
    config = broker.jetstream_config()
    assert config["sync_always"] is True
    assert config["store_dir"] == str(tmp_path / "nats" / "jetstream")
    assert broker.verify_sync() == "always"
    varz = broker.varz()
    assert varz["host"] == "127.0.0.1" and varz["port"] == broker.port
    assert varz["http_host"] == "127.0.0.1" and varz["http_port"] == broker.monitor_port
    conf = broker.config_file.read_text()
    assert "sync_interval: always" in conf and f"listen: 127.0.0.1:{broker.port}" in conf
    assert stat.S_IMODE(broker.config_file.stat().st_mode) == 0o600


@pytest.mark.parametrize("broker", ["2m"], indirect=True)
def test_an_interval_is_what_the_broker_runs_with(broker: EmbeddedNats) -> None:
    config = broker.jetstream_config()
    assert config.get("sync_always") is not True
    assert config["sync_interval"] == 120 * 10**9
    assert broker.verify_sync() == "2m"
    assert 'sync_interval: "2m"' in broker.config_file.read_text()


@pytest.mark.parametrize("broker", ["2m"], indirect=True)
def test_a_broker_that_syncs_otherwise_than_asked_is_refused(broker: EmbeddedNats) -> None:
    broker.sync = "always"  # what `rapport up` would have asked of a server that runs with 2m
    with pytest.raises(BrokerSyncMismatch, match=r"syncs '2m' but RAPPORT_BROKER_SYNC asks for 'always'"):
        broker.verify_sync()


async def test_sqlite_runs_synchronous_full(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'rapport.db'}")
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA synchronous"))).scalar_one() == 2  # FULL
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
    finally:
        await engine.dispose()


# --- rapport up -------------------------------------------------------------------------------------

def _lines(process: subprocess.Popen[str]) -> queue.Queue[str | None]:
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _until_up(process: subprocess.Popen[str], lines: queue.Queue[str | None], timeout: float) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"rapport up not up after {timeout:.0f}s: {seen}")
        if line is None:
            pytest.fail(f"rapport up exited with {process.wait(10)} before it was up: {seen}")
        seen.append(line.rstrip("\n"))
        if "Rapport is up" in line:
            return seen


def _readyz(url: str) -> dict[str, object]:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
            body: dict[str, object] = json.loads(response.read())
    except urllib.error.HTTPError as error:  # 503 still carries the body
        body = json.loads(error.read())
    return body


@contextmanager
def rapport_up(data: Path, **extra_env: str) -> Iterator[list[str]]:
    """`rapport up` as a user runs it, until it says it is up (bounded); SIGTERM and a clean exit after."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAPPORT_BROKER_URL", "RAPPORT_DATABASE_URL", "RAPPORT_BROKER_SYNC", "RAPPORT_DATA_DIR")}
    process = subprocess.Popen(
        [sys.executable, "-m", "rapport.cli", "up", "--data-dir", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**env, **extra_env},
    )
    try:
        yield _until_up(process, _lines(process), timeout=120)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0


@pytest.mark.e2e
def test_rapport_up_on_a_data_dir_of_an_earlier_release_goes_on_with_its_one_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shared = data / "rapport.db"
    asyncio.run(upgrade(f"sqlite+aiosqlite:///{shared}", "0016"))  # as an earlier release left it
    with rapport_up(data) as output:
        assert f"database  sqlite+aiosqlite:///{shared.resolve()}" in output, output
        assert not list(data.glob("ingest.db*")) and not list(data.glob("gateway.db*"))
        assert _service_durability(data) == {
            name: {"broker": "fsync always", "database": "sqlite synchronous=FULL"} for name in SERVICES}
    engine = create_engine(f"sqlite+aiosqlite:///{shared}")

    async def revision() -> str:
        async with engine.connect() as connection:
            return str((await connection.execute(text("select version_num from alembic_version"))).scalar_one())

    try:
        assert asyncio.run(revision()) != "0016", "rapport up migrates the one file to the newest schema"
    finally:
        asyncio.run(engine.dispose())


def _service_durability(data: Path) -> dict[str, object]:
    services = json.loads((data / "endpoints.json").read_text())["services"]
    assert set(services) == set(SERVICES)
    return {name: _readyz(service["url"]).get("durability") for name, service in services.items()}


@pytest.mark.e2e
def test_rapport_up_states_durability_and_keeps_its_files_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    left_over = data / "old.log"
    left_over.write_text("from an earlier run")
    left_over.chmod(0o644)
    with rapport_up(data) as output:
        durability = [line for line in output if line.startswith("durability")]
        assert durability == [
            "durability  broker fsync always (embedded, single node), database sqlite synchronous=FULL"], output
        assert f"database  sqlite, a file per service in {data.resolve()}: ingest.db, scoring.db, alerts.db, " \
               "gateway.db" in output, output
        broker_line = next(line for line in output if line.startswith("broker"))
        assert f":{SHARED_NATS_PORT}" not in broker_line
        assert _service_durability(data) == {
            name: {"broker": "fsync always", "database": "sqlite synchronous=FULL"} for name in SERVICES}

        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        modes = {}
        for root, dirs, files in os.walk(data):
            for name in [*dirs, *files]:
                modes[str(Path(root, name).relative_to(data))] = stat.S_IMODE(Path(root, name).lstat().st_mode)
        expected = {*(f"{name}.db{end}" for name in SERVICES for end in ("", "-wal", "-shm")), "endpoints.json",
                    "nats-server.conf", "nats-server.log", "ingest.log", "scoring.log", "alerts.log", "old.log", "nats"}
        assert expected <= set(modes), sorted(modes)
        assert any(path.startswith("nats/jetstream/") for path in modes), "the store has files"
        opened = {path: oct(mode) for path, mode in modes.items() if mode & 0o077}
        assert not opened, f"readable or writable by others: {opened}"
        assert not {path: oct(m) for path, m in modes.items() if (data / path).is_dir() and m != 0o700}


@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.parametrize("broker", ["2m"], indirect=True)
def test_rapport_up_names_an_external_brokers_policy_and_what_postgresql_reports(
        broker: EmbeddedNats, postgres_databases: Any, tmp_path: Path) -> None:
    database = asyncio.run(postgres_databases.postgres())
    with rapport_up(tmp_path / "data", RAPPORT_BROKER_URL=broker.url, RAPPORT_DATABASE_URL=database,
                    RAPPORT_BROKER_SYNC="2m") as output:
        [durability] = [line for line in output if line.startswith("durability")]
        assert durability == (
            "durability  broker fsync every 2m (external: as set by RAPPORT_BROKER_SYNC, configure the server "
            "to match), database postgresql fsync=on synchronous_commit=on"), output
        assert _service_durability(tmp_path / "data") == {
            name: {"broker": "fsync every 2m", "database": "postgresql fsync=on synchronous_commit=on"}
            for name in SERVICES}
