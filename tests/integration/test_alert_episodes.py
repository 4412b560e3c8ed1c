"""The alerts service's episode state on a real database (SQLite and PostgreSQL), when one batch
holds a late score and a newer one of the same episode."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.alerts.handlers import Alerting
from rapport.services.alerts.models import EpisodeRecord
from rapport.services.alerts.rules import load_ruleset
from rapport.services.alerts.unit_of_work import AlertsUnitOfWork
from rapport.shared.contracts.score import ScoreComputed, Scored
from rapport.shared.instruments import load_registry
from rapport.shared.messaging.consumer import Inbound
from rapport.shared.messaging.publish import cloud_event

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def phq9_responses(total: int) -> dict[int, float | None]:
    """Nine PHQ-9 answers (0-3 each) that add up to `total`, item 9 never endorsed."""
    answers = [min(3, max(0, total - 3 * n)) for n in range(8)] + [0]
    assert sum(answers) == total
    return {n + 1: float(a) for n, a in enumerate(answers)}


def computed(session: int, total: int) -> Inbound:
    scored = Scored(instrument="phq9", instrument_version="1", kind="outcome", better="lower", total=total,
                    total_min=0, total_max=27, caseness=total >= 10, risk_checked=True)
    score = ScoreComputed(tenant="clinic-a", submission_id=f"s{session}", revision=1, client_id="client-0001",
                          episode_id="episode-0001", administered_at=T0 + timedelta(days=7 * (session - 1)),
                          score=scored, responses=phq9_responses(total))
    event = cloud_event(entity="score", verb="computed", service="scoring", tenant="clinic-a",
                        subject="rapport.clinic-a.score.computed", about=score.submission_id, data=score)
    return Inbound(f"m{session}", event.subject, "clinic-a", event.body, 1)


async def test_a_batch_with_a_late_score_and_a_newer_one_counts_each_score_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Session 2 first; then sessions 1 (late) and 3 in one batch. The replay on session 1 reads every
    stored score of the episode, session 3 included, so session 3 is not evaluated a second time:
    the episode has three sessions, not four."""
    alerting = Alerting(load_ruleset(), load_registry())
    now = datetime(2026, 6, 1, tzinfo=UTC)
    async with sessions() as session, session.begin():
        await alerting(AlertsUnitOfWork.on(session, now), [computed(2, 14)])
    async with sessions() as session, session.begin():
        uow = AlertsUnitOfWork.on(session, now)
        await alerting(uow, [computed(1, 16), computed(3, 12)])
        events = uow.events
    async with sessions() as session:
        [state] = (await session.execute(select(EpisodeRecord.__table__.c.state))).scalars().all()
    assert sum(e.subject.endswith("evaluation.completed") for e in events) == 2
    phq9 = state["series"]["phq9"]
    assert (state["sessions"], phq9["count"], phq9["running"]["n"], phq9["baseline"], phq9["previous"]) == (
        3, 3, 3, 16.0, 12.0)
