"""Retry or dead-letter: a pure decision, kept apart from broker I/O so it can be tested alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import exc as sa_exc


class ConcurrencyConflict(Exception):  # noqa: N818 - names the situation
    """Another replica changed the same row first; the message is retried and re-reads it."""


@dataclass(frozen=True)
class Retry:
    delay_seconds: float


@dataclass(frozen=True)
class DeadLetter:
    reason: str


def is_transient(error: BaseException) -> bool:
    """Faults that can pass by themselves: the database or broker away, a lock or version conflict."""
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(
        error,
        (
            sa_exc.OperationalError,
            sa_exc.InterfaceError,
            sa_exc.TimeoutError,
            sa_exc.DisconnectionError,
            sa_exc.IntegrityError,  # a concurrent replica inserted the same key first
            ConcurrencyConflict,
            ConnectionError,
            OSError,
            asyncio.TimeoutError,
        ),
    )


def plan_retry(
    error: BaseException, deliveries: int, max_deliver: int, backoff: Sequence[float]
) -> Retry | DeadLetter:
    """Poison input is dead-lettered on first sight; transient faults are retried with backoff
    until the delivery count reaches max_deliver, then dead-lettered with the error."""
    if not is_transient(error):
        return DeadLetter(reason=f"poison: {type(error).__name__}")
    if deliveries >= max_deliver:
        return DeadLetter(reason=f"gave up after {deliveries} deliveries: {type(error).__name__}")
    step = min(deliveries - 1, len(backoff) - 1) if backoff else 0
    return Retry(delay_seconds=backoff[step] if backoff else 1.0)
