"""Retry or dead-letter: a pure decision, kept apart from broker I/O so it can be tested alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import exc as sa_exc


@dataclass(frozen=True)
class Retry:
    delay_seconds: float


@dataclass(frozen=True)
class DeadLetter:
    reason: str


# SQLSTATE classes of faults that pass by themselves: connection exception (08), transaction
# rollback such as serialization failure or deadlock (40), insufficient resources (53), object not
# in prerequisite state such as "database not accepting connections" or a lock not available (55),
# operator intervention such as admin shutdown (57).
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "55", "57"})


def _sqlstate(error: sa_exc.DBAPIError) -> str | None:
    for candidate in (error.orig, getattr(error.orig, "__cause__", None)):
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(state, str):
            return state
    return None


def is_transient(error: BaseException) -> bool:
    """Faults that can pass by themselves: the database or broker away, a lock or version conflict."""
    if isinstance(error, sa_exc.DBAPIError):
        state = _sqlstate(error)
        if error.connection_invalidated or (state is not None and state[:2] in TRANSIENT_SQLSTATE_CLASSES):
            return True
    return isinstance(
        error,
        (
            sa_exc.OperationalError,
            sa_exc.InterfaceError,
            sa_exc.TimeoutError,
            sa_exc.DisconnectionError,
            sa_exc.IntegrityError,  # a concurrent replica inserted the same key first
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
