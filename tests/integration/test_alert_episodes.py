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
    return delivered(score, f"m{session}")


def delivered(score: ScoreComputed, message_id: str) -> Inbound:
    """`score.computed` as the alerts service's consumer is given it, delivered once."""
    event = cloud_event(entity="score", verb="computed", service="scoring", tenant="clinic-a",
                        subject="rapport.clinic-a.score.computed", about=score.submission_id, data=score)
    return Inbound(message_id, event.subject, "clinic-a", event.body, 1)


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


WAISR_PARTS = {"goal": (4, 6, 8, 11), "task": (1, 2, 10, 12), "bond": (3, 5, 7, 9)}  # the registry's item map


def waisr(session: int, goal: int, task: int, bond: int) -> Inbound:
    """Sam's WAI-SR (a synthetic client), scored from its items by the scoring domain."""
    from rapport.services.scoring.domain import score as score_of

    instrument = load_registry().get("waisr")
    assert instrument is not None
    responses: dict[int, float | None] = {}
    for part, total in {"goal": goal, "task": task, "bond": bond}.items():
        for n, item in enumerate(WAISR_PARTS[part]):
            responses[item] = float(total // 4 + (1 if n < total % 4 else 0))
    score = ScoreComputed(tenant="clinic-a", submission_id=f"wai-{session}", revision=1, client_id="client-sam",
                          episode_id="episode-sam", clinician_id="clin-07", session_number=session,
                          administered_at=T0 + timedelta(days=7 * (session - 1)),
                          score=score_of(instrument, responses), responses=responses)
    return delivered(score, f"m-wai-{session}")


async def test_sams_bond_collapse_is_one_rupture_alert_on_disk_and_a_late_session_keeps_it_one(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Sam's WAI-SR: 48 (every part 16) at sessions 1, 2 and 4, bond 15 at session 5 (one item one step:
    nothing), then bond 10 at session 6: one alliance_rupture alert naming the bond, its parts' levels kept in
    the stored episode state. Session 3 (48) arrives late and the episode is evaluated again from the stored
    scores: still one open rupture alert, the same one, naming the bond."""
    from rapport.services.alerts.models import StoredAlert

    alerting = Alerting(load_ruleset(), load_registry())
    now = datetime(2026, 6, 1, tzinfo=UTC)
    for batch in ([waisr(1, 16, 16, 16), waisr(2, 16, 16, 16), waisr(4, 16, 16, 16)], [waisr(5, 16, 16, 15)],
                  [waisr(6, 16, 16, 10)], [waisr(3, 16, 16, 16)]):
        async with sessions() as session, session.begin():
            uow = AlertsUnitOfWork.on(session, now)
            await alerting(uow, batch)
            if batch[0].message_id == "m-wai-5":
                assert not any(".alert." in e.subject for e in uow.events), "a one-step wobble raises nothing"
    async with sessions() as session:
        rows = (await session.execute(select(StoredAlert.__table__))).mappings().all()
        [state] = (await session.execute(select(EpisodeRecord.__table__.c.state))).scalars().all()
    open_ruptures = [r for r in rows if r["kind"] == "alliance_rupture" and r["status"] != "resolved"]
    assert len(rows) == 1, "one alert in all: the replay kept the one it found, it did not supersede and raise again"
    assert len(open_ruptures) == 1 and open_ruptures[0]["subscale"] is None
    assert list(open_ruptures[0]["document"]["evidence"][-1]["values"]["parts"]) == ["bond"]
    # the bond's pre-rupture level from all five sessions before it, the late one included: 15.8 less the floor 2
    assert state["ruptures"]["waisr"]["parts_to_regain"] == {"bond": 13.8}
    assert state["series"]["waisr:bond"]["count"] == 6
