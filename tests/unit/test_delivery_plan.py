"""Retry or dead-letter: the pure decision behind every consumer."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError, OperationalError

from shared.contracts.submission import SubmissionAccepted
from shared.messaging.retry import DeadLetter, Retry, is_transient, plan_retry

BACKOFF = [1.0, 5.0, 30.0]


def _validation_error() -> ValidationError:
    try:
        SubmissionAccepted.model_validate({})
    except ValidationError as exc:
        return exc
    raise AssertionError("expected a validation error")


def test_poison_input_is_dead_lettered_on_first_sight() -> None:
    plan = plan_retry(_validation_error(), deliveries=1, max_deliver=6, backoff=BACKOFF)
    assert isinstance(plan, DeadLetter)
    assert plan.reason == "poison: ValidationError"


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("SELECT 1", {}, Exception("connection refused")),
        IntegrityError("INSERT", {}, Exception("duplicate key")),
        ConnectionRefusedError(),
        TimeoutError(),
    ],
)
def test_a_database_or_broker_fault_is_retried_with_growing_backoff(error: Exception) -> None:
    assert is_transient(error)
    assert plan_retry(error, deliveries=1, max_deliver=6, backoff=BACKOFF) == Retry(1.0)
    assert plan_retry(error, deliveries=2, max_deliver=6, backoff=BACKOFF) == Retry(5.0)
    assert plan_retry(error, deliveries=5, max_deliver=6, backoff=BACKOFF) == Retry(30.0)


def test_a_transient_fault_that_outlasts_max_deliver_is_dead_lettered_with_its_error() -> None:
    error = OperationalError("SELECT 1", {}, Exception("database is down"))
    plan = plan_retry(error, deliveries=6, max_deliver=6, backoff=BACKOFF)
    assert plan == DeadLetter(reason="gave up after 6 deliveries: OperationalError")
