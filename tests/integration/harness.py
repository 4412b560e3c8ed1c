"""Helpers for integration tests: settings for a test, services running in this process, a
client following submissions through the pipeline."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

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
