"""Poison, transient or defect: the pure decision behind every consumer."""

from __future__ import annotations

import sqlite3

import pytest
from pydantic import ValidationError
from sqlalchemy.exc import DataError, IntegrityError, OperationalError, ProgrammingError

from rapport.shared.contracts.submission import SubmissionAccepted
from rapport.shared.messaging.retry import DeadLetter, PoisonMessage, Retry, backoff_delay, classify, plan_retry

BACKOFF = [1.0, 5.0, 30.0]


class PgError(Exception):
    """What asyncpg's errors carry that the plan reads: the SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


def _validation_error() -> ValidationError:
    try:
        SubmissionAccepted.model_validate({})
    except ValidationError as exc:
        return exc
    raise AssertionError("expected a validation error")


def test_poison_named_by_the_service_is_dead_lettered_on_first_sight_with_its_reason() -> None:
    plan = plan_retry(PoisonMessage("tenant_mismatch: another tenant"), deliveries=1, max_deliver=6, backoff=BACKOFF)
    assert plan == DeadLetter(reason="poison: tenant_mismatch: another tenant")


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused")),
        OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked")),
        OperationalError("SELECT 1", {}, PgError("08006")),  # connection failure
        OperationalError("SELECT 1", {}, PgError("57014")),  # statement cancelled by its timeout
        OperationalError("SELECT 1", {}, PgError("40001")),  # serialization failure
        IntegrityError("INSERT", {}, PgError("23505")),  # a concurrent replica inserted the key first
        IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed: x.id")),
        ConnectionRefusedError(),
        TimeoutError(),
    ],
)
def test_a_database_or_broker_fault_is_transient_and_never_dead_lettered(error: Exception) -> None:
    assert classify(error) == "transient"
    for deliveries in (1, 6, 50, 10_000):
        assert isinstance(plan_retry(error, deliveries=deliveries, max_deliver=6, backoff=BACKOFF), Retry)


@pytest.mark.parametrize(
    "error",
    [
        DataError("INSERT", {}, PgError("22001")),  # a value too long for one of our own columns
        IntegrityError("INSERT", {}, PgError("23502")),  # not-null violation
        ProgrammingError("SELECT", {}, PgError("42P01")),  # no such table: not migrated
        OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: ingest_inbox")),
        _validation_error(),  # a model of our own refusing what our own code built
        KeyError("episode"),
    ],
)
def test_a_defect_is_retried_then_dead_lettered_as_a_defect_never_as_poison(error: Exception) -> None:
    assert classify(error) == "defect"
    assert plan_retry(error, deliveries=1, max_deliver=6, backoff=BACKOFF) == Retry(1.0)
    assert plan_retry(error, deliveries=5, max_deliver=6, backoff=BACKOFF) == Retry(30.0)
    plan = plan_retry(error, deliveries=6, max_deliver=6, backoff=BACKOFF)
    assert plan == DeadLetter(reason=f"defect: {type(error).__name__} after 6 deliveries")


def test_the_backoff_follows_its_schedule_then_stays_at_its_last_step() -> None:
    assert [backoff_delay(n, BACKOFF) for n in range(1, 7)] == [1.0, 5.0, 30.0, 30.0, 30.0, 30.0]
