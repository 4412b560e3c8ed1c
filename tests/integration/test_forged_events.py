"""Forged events between services and borrowed message ids, against the real services on NATS
JetStream (SQLite and PostgreSQL): nothing forged takes effect, nothing of another tenant's is
erased, and every forged event is dead-lettered with its reason."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import nats
import pytest
from harness import running, settings_for, watching
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from rapport.services.alerts.models import StoredAlert
from rapport.services.scoring.models import StoredScore
from rapport.shared.contracts.envelope import derived_event_id
from rapport.shared.contracts.score import ScoreComputed, Scored
from rapport.shared.contracts.submission import Submission, SubmissionAccepted
from rapport.shared.messaging import subjects
from rapport.shared.messaging.publish import cloud_event

pytestmark = [pytest.mark.nats, pytest.mark.hostile]
SERVICES = ["ingest", "scoring", "alerts"]
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def accepted(tenant: str, subject_tenant: str, sid: str, responses: dict[int, float | None]) -> tuple[str, bytes]:
    submission = Submission(tenant=tenant, submission_id=sid, instrument="phq9", client_id="client-0001",
                            episode_id="episode-0001", administered_at=T0, responses=responses)
    data = SubmissionAccepted(submission=submission, revision=1, disposition="new", inbound_message_id="forged")
    event = cloud_event(entity="submission", verb="accepted", service="ingest", tenant=tenant,
                        subject=subjects.outbound(subject_tenant, "submission", "accepted"), about=sid, data=data)
    return event.subject, event.body


def computed(tenant: str, subject_tenant: str, sid: str, total: float, responses: dict[int, float | None],
             **scored: Any) -> tuple[str, bytes]:
    values = {"instrument": "phq9", "instrument_version": "1", "kind": "outcome", "better": "lower",
              "total": total, "total_min": 0, "total_max": 27, "risk_checked": True, **scored}
    score = ScoreComputed(tenant=tenant, submission_id=sid, revision=1, client_id="client-0001",
                          episode_id="episode-0001", administered_at=T0, score=Scored(**values), responses=responses)
    event = cloud_event(entity="score", verb="computed", service="scoring", tenant=tenant,
                        subject=subjects.outbound(subject_tenant, "score", "computed"), about=sid, data=score)
    return event.subject, event.body


ALL_THREES = {n: 3.0 for n in range(1, 10)}

FORGERIES = {
    "a score naming another tenant than its subject": (
        lambda me, victim: computed(victim, me, "f-1", 27, ALL_THREES), "alerts",
        "poison: tenant_mismatch: the event names another tenant than the subject it arrived on"),
    "an accepted submission naming another tenant": (
        lambda me, victim: accepted(victim, me, "f-2", ALL_THREES), "scoring",
        "poison: tenant_mismatch: the event names another tenant than the subject it arrived on"),
    "item values of -5 (a total of -45)": (
        lambda me, victim: accepted(me, me, "f-3", {n: -5.0 for n in range(1, 10)}), "scoring",
        "poison: the submission does not fit phq9: out_of_range at responses.1; out_of_range at responses.2; "
        "out_of_range at responses.3; out_of_range at responses.4; out_of_range at responses.5; and 4 more"),
    "an item 99": (
        lambda me, victim: computed(me, me, "f-4", 27, {**ALL_THREES, 99: 3.0}), "alerts",
        "poison: the score does not fit phq9: unknown_item at responses.99"),
    "a PHQ-9 'prorated' from one item": (
        lambda me, victim: computed(me, me, "f-5", 27, {9: 3.0}, prorated=True), "alerts",
        "poison: the score does not fit phq9: missing_items at responses"),
    "a total outside the instrument's range": (
        lambda me, victim: computed(me, me, "f-6", 45, ALL_THREES), "alerts",
        "poison: the score does not fit phq9: not_this_instrument at score"),
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
async def test_a_forged_internal_event_is_dead_lettered_and_changes_nothing(
    database_url: str, fresh_stream: str, tenant: str, forgery: str
) -> None:
    build, service, reason = FORGERIES[forgery]
    victim = tenant + "-victim"
    subject, body = build(tenant, victim)
    async with running(SERVICES, settings_for(database_url), fresh_stream):
        connection = await nats.connect(fresh_stream)
        try:
            letters = await connection.subscribe(subjects.dead_letter(tenant, service))
            await connection.jetstream().publish(subject, body, headers={"Nats-Msg-Id": f"forged-{forgery}"})
            letter = await letters.next_msg(timeout=20)
        finally:
            await connection.close()
    assert letter.headers is not None and letter.headers["Rapport-Error"] == reason
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(StoredScore))).scalar_one() == 0
            assert (await conn.execute(select(func.count()).select_from(StoredAlert))).scalar_one() == 0
    finally:
        await engine.dispose()


async def test_a_tenant_sending_another_tenants_next_event_id_takes_nothing_from_it(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    """Tenant A guesses the id of tenant B's next score event and sends it first, on A's own subject.
    B's submission is still scored, evaluated, and its risk item still raises the critical alert."""
    victim = tenant + "-b"
    taken = derived_event_id("score.computed", victim, "sub-0001", 1, "")
    body = json.dumps({
        "submission_id": "sub-0001", "instrument": "phq9", "client_id": "client-0001", "episode_id": "ep-1",
        "clinician_id": "clinician-01", "administered_at": T0.isoformat(),
        "responses": {str(n): 2 for n in range(1, 10)},
    }).encode()
    async with running(SERVICES, settings_for(database_url), fresh_stream), \
            watching(fresh_stream, tenant) as attacker, watching(fresh_stream, victim) as clinic:
        forged = await attacker.submit(b"{}", message_id=taken)
        await asyncio.wait_for(forged.done.wait(), 30)
        assert forged.answers[0]["kind"] == "rapport.submission.rejected.v1"
        journey = await clinic.submit(body)
        await asyncio.wait_for(journey.done.wait(), 30)
        assert journey.scores["sub-0001"]["score"]["total"] == 18
        assert [e["data"]["alert"]["kind"] for e in journey.alerts] == ["critical_item"]
