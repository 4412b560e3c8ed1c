"""Retry, pause or dead-letter: a pure decision, kept apart from broker I/O so it can be tested alone.

Three kinds of failure, three answers:
- **poison**: the message itself can never be handled (a malformed or forged event between
  services). It is dead-lettered on first sight, with the reason.
- **transient**: a dependency is away or busy (the database or broker down, a statement timed out,
  a lock or a concurrent replica's insert). Nothing is wrong with the message: consumption pauses and
  the batch is retried with capped backoff for as long as the fault lasts. Never dead-lettered.
- **defect**: anything else, an error in Rapport's own code or schema (a value our own columns
  refuse, a bug). Retried a few deliveries in case it passes, logged loudly, then dead-lettered as a
  defect so it can be redriven once fixed. Never classed as poison: the message may be fine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import exc as sa_exc


class PoisonMessage(Exception):
    """Raised by a service for a message it can never handle; the text names what is wrong, never
    a payload value."""


@dataclass(frozen=True)
class Retry:
    delay_seconds: float


@dataclass(frozen=True)
class DeadLetter:
    reason: str


Failure = Literal["poison", "transient", "defect"]

# SQLSTATE classes of faults that pass by themselves: connection exception (08), transaction
# rollback such as serialization failure or deadlock (40), insufficient resources (53), object not
# in prerequisite state such as "database not accepting connections" or a lock not available (55),
# operator intervention such as admin shutdown or a statement cancelled by timeout (57).
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "55", "57"})
# unique_violation: a concurrent replica inserted the same key first; the retry reads its row
UNIQUE_VIOLATION = "23505"


def _sqlstate(error: sa_exc.DBAPIError) -> str | None:
    for candidate in (error.orig, getattr(error.orig, "__cause__", None)):
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(state, str):
            return state
    return None


def _sqlite_transient(error: sa_exc.DBAPIError) -> bool:
    # sqlite3.OperationalError covers both "database is locked" (transient) and "no such table"
    # (a defect: the schema is not migrated), told apart by the message only.
    text = str(error.orig).lower()
    return any(words in text for words in ("locked", "busy", "disk i/o", "unable to open"))


def classify(error: BaseException) -> Failure:
    if isinstance(error, PoisonMessage):
        return "poison"
    if isinstance(error, sa_exc.DBAPIError):
        state = _sqlstate(error)
        if error.connection_invalidated:
            return "transient"
        if state is not None:
            return "transient" if state[:2] in TRANSIENT_SQLSTATE_CLASSES or state == UNIQUE_VIOLATION \
                else "defect"
        if isinstance(error, sa_exc.IntegrityError):
            return "transient" if "unique" in str(error.orig).lower() else "defect"
        if isinstance(error, sa_exc.OperationalError):
            return "transient" if _sqlite_transient(error) or "sqlite" not in type(error.orig).__module__ \
                else "defect"
        if isinstance(error, sa_exc.InterfaceError):
            return "transient"
        return "defect"
    if isinstance(error, sa_exc.TimeoutError | sa_exc.DisconnectionError | ConnectionError | asyncio.TimeoutError):
        return "transient"
    if isinstance(error, OSError) and not isinstance(error, FileNotFoundError | PermissionError):
        return "transient"
    if type(error).__module__.startswith("nats"):  # the broker away or slow: nats.errors.*, nats.js.errors.*
        return "transient"
    return "defect"


def is_transient(error: BaseException) -> bool:
    return classify(error) == "transient"


def backoff_delay(attempt: int, backoff: Sequence[float]) -> float:
    """The wait before retry number `attempt` (1-based): the schedule, then its last step for ever."""
    return backoff[min(max(attempt, 1), len(backoff)) - 1]


def plan_retry(
    error: BaseException, deliveries: int, max_deliver: int, backoff: Sequence[float]
) -> Retry | DeadLetter:
    """What to do with one message whose handling failed on its `deliveries`-th delivery."""
    kind = classify(error)
    name = type(error).__name__
    if kind == "poison":
        return DeadLetter(reason=f"poison: {error}"[:300])
    if kind == "transient":
        return Retry(delay_seconds=backoff_delay(deliveries, backoff))
    if deliveries >= max_deliver:
        return DeadLetter(reason=f"defect: {name} after {deliveries} deliveries")
    return Retry(delay_seconds=backoff_delay(deliveries, backoff))
