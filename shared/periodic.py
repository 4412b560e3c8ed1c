"""A background task that does one pass of work every few seconds, started and stopped with a service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("rapport.periodic")


class Periodic:
    def __init__(self, name: str, interval_seconds: float, once: Callable[[], Awaitable[object]]) -> None:
        self.name = name
        self._interval = interval_seconds
        self._once = once
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self._once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed pass is tried again at the next interval
                log.warning("%s: pass failed; trying again", self.name, exc_info=True)
            await asyncio.sleep(self._interval)
