"""Ingest decides whether a submission is new, an amendment or a resubmission of the same content."""

from __future__ import annotations

from datetime import UTC, datetime

from rapport.services.ingest.admission import admit
from rapport.shared.contracts.problems import Problem
from rapport.shared.contracts.submission import Submission


def _phq9(**changes: object) -> Submission:
    values: dict[str, object] = {
        "tenant": "clinic-a", "submission_id": "sub-0001", "instrument": "phq9", "client_id": "client-0001",
        "administered_at": datetime(2026, 3, 2, 10, tzinfo=UTC),
        "responses": {i: 1 for i in range(1, 10)},
    }
    return Submission.model_validate(values | changes)


def test_a_first_submission_is_new_at_revision_one() -> None:
    admission = admit(_phq9(), None)
    assert (admission.revision, admission.disposition) == (1, "new")


def test_the_same_content_again_changes_nothing_even_with_other_warnings() -> None:
    first = admit(_phq9(), None)
    again = admit(_phq9(warnings=[Problem(field="total", code="total_mismatch", message="x")]),
                  (first.revision, first.content_hash))
    assert (again.revision, again.disposition) == (1, "unchanged")
    assert not again.changes_anything


def test_new_content_under_the_same_id_supersedes_as_the_next_revision() -> None:
    first = admit(_phq9(), None)
    corrected = admit(_phq9(responses={i: 2 for i in range(1, 10)}, amends=True), (1, first.content_hash))
    assert (corrected.revision, corrected.disposition) == (2, "amended")
