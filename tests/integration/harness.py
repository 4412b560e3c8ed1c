"""Helpers for integration tests: settings for a test, services running in this process, a
client following submissions through the pipeline, and `rapport up` as a user runs it."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from rapport.embedded_nats import free_port
from rapport.journeys import Journeys
from rapport.shared.service import ServiceRuntime
from rapport.shared.settings import Settings


def settings_for(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url, "batch_wait_seconds": 0.01, "retry_backoff_seconds": [0.2, 0.2, 0.2],
        "max_deliver": 3, "graceful_timeout_seconds": 5.0, **overrides,
    }
    return Settings(**values)


@asynccontextmanager
async def running(
    names: list[str], settings: Settings, nats_url: str,
    adjust: Callable[[str, ServiceRuntime], None] | None = None,
) -> AsyncIterator[dict[str, ServiceRuntime]]:
    runtimes: dict[str, ServiceRuntime] = {}
    try:
        for name in names:
            runtime, _asgi = importlib.import_module(f"rapport.services.{name}.app").build(settings, nats_url)
            if adjust:
                adjust(name, runtime)
            await runtime.start()
            runtimes[name if name not in runtimes else f"{name}-{len(runtimes)}"] = runtime
        yield runtimes
    finally:
        for runtime in runtimes.values():
            await runtime.stop()


@asynccontextmanager
async def watching(nats_url: str, tenant: str) -> AsyncIterator[Journeys]:
    journeys = await Journeys.connect(nats_url, tenant)
    try:
        yield journeys
    finally:
        await journeys.close()


@asynccontextmanager
async def serving(settings: Settings, nats_url: str, port: int | None = None) -> AsyncIterator[str]:
    """The gateway as `rapport serve gateway` runs it: its ASGI app under uvicorn, lifespan and all;
    on `port` when its public URL must be known before it starts (an identity provider's redirects)."""
    from rapport.services.gateway.app import build

    _runtime, asgi = build(settings, nats_url)
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port or free_port(), log_config=None,
                                           access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            pytest.fail("the gateway did not start")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        await task


async def until(check: Callable[[], Awaitable[Any]], seconds: float = 30.0) -> Any:
    """Ask `check` until it gives something truthy: a read model follows the events it is fed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        found = await check()
        if found or loop.time() > deadline:
            return found
        await asyncio.sleep(0.05)


@contextmanager
def rapport_up(data_dir: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, object]]]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAPPORT_BROKER_URL", "RAPPORT_DATABASE_URL")}
    process = subprocess.Popen(
        [sys.executable, "-m", "rapport.cli", "up", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:  # the stack says when it is up
            if "Rapport is up" in line:
                break
        else:
            pytest.fail(f"rapport up exited with {process.wait()} before it was up")
        yield process, json.loads((data_dir / "endpoints.json").read_text())
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
