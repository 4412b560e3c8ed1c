"""Scoring's handler against its unit of work with an in-memory record (issue 10): scores placed in
administration order whatever the arrival order, the later scores a late one changes re-sent, one
read of stored points per batch, and nothing counted before commit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from fakes import InMemoryRecord, scoring_unit_of_work

from rapport.services.scoring.handlers import Scoring
from rapport.shared.contracts.submission import Submission, SubmissionAccepted
from rapport.shared.instruments import load_registry
from rapport.shared.messaging.consumer import Inbound
from rapport.shared.messaging.publish import cloud_event
from rapport.shared.metrics import REGISTRY as METRICS

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
NOW = datetime(2026, 6, 1, tzinfo=UTC)
SCORING = Scoring(load_registry())


def phq9(tenant: str, session: int, total: int) -> Inbound:
    """Sam's weekly PHQ-9 (a synthetic client), item 9 never endorsed."""
    items = [min(3, max(0, total - 3 * n)) for n in range(8)] + [0]
    submission = Submission(
        tenant=tenant, submission_id=f"s{session}", instrument="phq9", client_id="client-sam",
        episode_id="episode-sam-1", administered_at=T0 + timedelta(days=7 * (session - 1)),
        responses={n + 1: float(v) for n, v in enumerate(items)},
    )
    event = cloud_event(entity="submission", verb="accepted", service="ingest", tenant=tenant,
                        subject=f"rapport.{tenant}.submission.accepted", about=submission.submission_id,
                        data=SubmissionAccepted(submission=submission, revision=1, disposition="new",
                                                inbound_message_id=f"m{session}"))
    return Inbound(f"m{session}", event.subject, tenant, event.body, 1)


async def batch(record: InMemoryRecord, *messages: Inbound) -> list[dict[str, Any]]:
    uow = scoring_unit_of_work(NOW, record)
    await SCORING(uow, list(messages))
    uow.committed()
    return [json.loads(e.body)["data"] for e in uow.events]


async def test_scores_in_order_need_no_stored_points_and_compare_with_baseline_and_previous() -> None:
    record = InMemoryRecord()
    await batch(record, phq9("handler-order", 1, 20))
    record.reads.clear()
    [second, third] = await batch(record, phq9("handler-order", 2, 17), phq9("handler-order", 3, 12))
    assert "points" not in record.reads
    assert (second["change"]["baseline_total"], second["change"]["previous_total"]) == (20.0, 20.0)
    assert (third["change"]["baseline_total"], third["change"]["previous_total"]) == (20.0, 17.0)


async def test_late_scores_in_one_batch_are_placed_among_each_other_from_one_read_and_the_next_is_re_sent() -> None:
    """Sam's sessions 1 and 4 were scored; 2 and 3 are typed in late, together."""
    record = InMemoryRecord()
    await batch(record, phq9("handler-late", 1, 20), phq9("handler-late", 4, 14))
    record.reads.clear()
    sent = await batch(record, phq9("handler-late", 2, 18), phq9("handler-late", 3, 16))
    assert record.reads.count("points") == 1
    assert [s["submission_id"] for s in sent] == ["s2", "s3", "s4"]
    s2, s3, s4 = sent
    assert s2["change"]["previous_total"] == 20.0 and s3["change"]["previous_total"] == 18.0
    assert s4["re_placed_by"] == "s3:1" and s4["change"]["previous_total"] == 16.0
    summary = record.summaries[("handler-late", "client-sam", "episode-sam-1", "phq9")]
    assert (summary.count, summary.baseline.total, summary.latest.total) == (4, 20.0, 14.0)


async def test_scores_count_once_committed_and_re_sent_ones_are_not_counted_again() -> None:
    tenant, record = "handler-score-counts", InMemoryRecord()

    def counted() -> float:
        return sum(s.value for metric in METRICS.collect() if metric.name == "rapport_scores"
                   for s in metric.samples if s.name == "rapport_scores_total" and s.labels.get("tenant") == tenant)

    uow = scoring_unit_of_work(NOW, record)
    await SCORING(uow, [phq9(tenant, 1, 20), phq9(tenant, 3, 16)])
    assert counted() == 0, "nothing counts before the batch commits"
    uow.committed()
    assert counted() == 2
    await batch(record, phq9(tenant, 2, 18))  # re-sends session 3: two events, one new score
    assert counted() == 3
