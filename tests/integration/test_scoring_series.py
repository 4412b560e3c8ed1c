"""The scoring service's longitudinal record on a real database (SQLite and PostgreSQL): late scores
placed among the stored ones, several in one batch."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.scoring.handlers import Scoring
from rapport.services.scoring.models import Series, StoredScore
from rapport.services.scoring.unit_of_work import ScoringUnitOfWork
from rapport.shared.contracts.submission import Submission, SubmissionAccepted
from rapport.shared.instruments import load_registry
from rapport.shared.messaging.consumer import Inbound
from rapport.shared.messaging.publish import cloud_event

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
WEEKLY_TOTALS = {1: 20, 2: 18, 3: 16, 4: 14}


def accepted(session: int) -> Inbound:
    total = WEEKLY_TOTALS[session]
    items = [min(3, max(0, total - 3 * n)) for n in range(8)] + [0]
    submission = Submission(
        tenant="clinic-a", submission_id=f"s{session}", instrument="phq9", client_id="client-0001",
        episode_id="episode-0001", administered_at=T0 + timedelta(days=7 * (session - 1)),
        responses={n + 1: float(v) for n, v in enumerate(items)},
    )
    event = cloud_event(entity="submission", verb="accepted", service="ingest", tenant="clinic-a",
                        subject="rapport.clinic-a.submission.accepted", about=submission.submission_id,
                        data=SubmissionAccepted(submission=submission, revision=1, disposition="new",
                                                inbound_message_id=f"m{session}"))
    return Inbound(f"m{session}", event.subject, "clinic-a", event.body, 1)


async def test_two_late_scores_in_one_batch_are_placed_among_each_other(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Sessions 1 and 4 arrive first; 2 and 3 come late, together. Session 3's previous score is
    session 2 (not the stored session 1), the series counts four sessions from 20 to 14, and
    session 4 is re-sent with session 3 as its previous score."""
    scoring = Scoring(load_registry())
    now = datetime(2026, 6, 1, tzinfo=UTC)
    async with sessions() as session, session.begin():
        await scoring(ScoringUnitOfWork.on(session, now), [accepted(1), accepted(4)])
    async with sessions() as session, session.begin():
        uow = ScoringUnitOfWork.on(session, now)
        await scoring(uow, [accepted(2), accepted(3)])
        events = uow.events
    async with sessions() as session:
        [summary] = (await session.execute(select(Series.__table__))).all()
        stored = {r.submission_id: r.document for r in await session.execute(select(StoredScore.__table__))}
    assert [json.loads(e.body)["data"]["submission_id"] for e in events] == ["s2", "s3", "s4"]
    assert stored["s4"]["re_placed_by"] == "s3:1" and stored["s4"]["change"]["previous_total"] == 16.0
    assert (summary.sessions, summary.baseline_total, summary.latest_total, summary.latest_submission) == (
        4, 20.0, 14.0, "s4")
    assert stored["s2"]["change"]["previous_total"] == 20.0
    assert stored["s3"]["change"]["previous_total"] == 18.0
    assert stored["s3"]["change"]["baseline_total"] == 20.0
