"""Ingest's handler against its unit of work with in-memory submissions (issue 10): new, amended and
unchanged submissions, one answer each, one read per batch, and nothing counted before commit."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fakes import InMemorySubmissions, ingest_unit_of_work

from rapport.services.ingest.handlers import Ingest
from rapport.shared.instruments import load_registry
from rapport.shared.messaging.consumer import Inbound
from rapport.shared.metrics import REGISTRY as METRICS
from rapport.shared.settings import Settings

FIXTURES = Path(__file__).parents[1] / "fixtures"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
INGEST = Ingest(load_registry(), Settings())


def phq9(tenant: str, message: str, **changes: Any) -> Inbound:
    submission = json.loads((FIXTURES / "native" / "phq9-complete.json").read_bytes())
    submission.update(changes)
    return Inbound(message_id=message, subject=f"rapport.{tenant}.in.submissions", tenant=tenant,
                   body=json.dumps(submission).encode(), deliveries=1)


def answers(events: list[Any]) -> list[tuple[str, str | None, int | None]]:
    out = []
    for event in events:
        data = json.loads(event.body)["data"]
        out.append((event.subject.rsplit(".", 1)[1], data.get("disposition"), data.get("revision")))
    return out


def accepted_count(tenant: str) -> float:
    return METRICS.get_sample_value("rapport_submissions_total",
                                    {"tenant": tenant, "instrument": "phq9", "outcome": "accepted"}) or 0.0


async def test_a_submission_sent_again_unchanged_then_corrected_is_stored_twice_and_answered_three_times() -> None:
    tenant, submissions = "handler-revisions", InMemorySubmissions()
    batches = [[phq9(tenant, "m-1")], [phq9(tenant, "m-2")],
               [phq9(tenant, "m-3", responses={str(i): 1 for i in range(1, 10)})]]
    seen = []
    for batch in batches:
        uow = ingest_unit_of_work(NOW, submissions)
        await INGEST(uow, batch)
        seen += answers(uow.events)
    assert seen == [("accepted", "new", 1), ("accepted", "unchanged", 1), ("accepted", "amended", 2)]
    revision, _hash, stored = submissions.stored[(tenant, "sub-0001")]
    assert (revision, stored.responses[9]) == (2, 1)


async def test_one_read_for_a_batch_and_the_batch_sees_its_own_earlier_messages() -> None:
    tenant, submissions = "handler-one-read", InMemorySubmissions()
    batch = [phq9(tenant, "m-1"), phq9(tenant, "m-2", submission_id="sub-0002"),
             phq9(tenant, "m-3", responses={str(i): 2 for i in range(1, 10)})]  # sub-0001 again, corrected
    uow = ingest_unit_of_work(NOW, submissions)
    await INGEST(uow, batch)
    assert submissions.loads == 1
    assert answers(uow.events) == [("accepted", "new", 1), ("accepted", "new", 1), ("accepted", "amended", 2)]
    assert submissions.stored[(tenant, "sub-0001")][0] == 2


async def test_acceptances_count_once_the_batch_commits_and_never_for_a_batch_that_did_not() -> None:
    tenant = "handler-counts"
    failed = ingest_unit_of_work(NOW)
    await INGEST(failed, [phq9(tenant, "m-1")])  # its transaction fails: committed() is never called
    assert accepted_count(tenant) == 0
    retried = ingest_unit_of_work(NOW)
    await INGEST(retried, [phq9(tenant, "m-1")])
    retried.committed()
    retried.committed()  # the actions run once
    assert accepted_count(tenant) == 1
