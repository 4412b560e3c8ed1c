"""A small synthetic clinic in the gateway's read model, for the lead's figures: alerts with their
transitions, scores with their NHS Talking Therapies figures and episodes' attendance with their
endings, written through the projection's own functions (records.keep_transitions, keep_scores,
keep_attendance), as the consumers write them. Every number
the figures should come to is worked out in `EXPECTED_*` beside the story.

The period is November 2026. clin-a acknowledged four alerts raised in it after 1, 2, 3 and 4 hours;
clin-b one after 30 minutes and has one rupture still waiting. One not-on-track alert was raised in
October and is still open on an episode scored in November; another was resolved back on track.
Another tenant has an alert for a clinician with the same id, which must never show.

Endings in November: c1 (clin-a) ended as planned after six sessions with a first and a last PHQ-9
and GAD-7: a finished course, recovered. c2 (clin-a) stopped coming after three sessions (unplanned)
with one PHQ-9 only: ended, not counted. c4 (clin-b) stopped after one session: not counted. c7
(clin-b, scored in October only) ended as planned after eight sessions, not a case at the start and
reliably worse. c5's planned ending is in December; c6 is still open after two sessions.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.gateway.records import keep_attendance, keep_scores, keep_transitions
from rapport.shared.contracts.alert import Alert, AlertTransition
from rapport.shared.contracts.attendance import AttendanceRecorded, AttendanceSummary
from rapport.shared.contracts.score import ScoreComputed, Scored

HOUR = timedelta(hours=1)
SINCE, UNTIL = "2026-11-01", "2026-11-30"


def at(month: int, day: int, hour: int = 9) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def transitions(tenant: str, alert_id: str, kind: str, clinician: str | None, client: str, raised: datetime, *,
                acknowledged_after: timedelta | None = None, resolution: str | None = None,
                severity: str = "high") -> list[AlertTransition]:
    def alert(version: int, status: str, updated: datetime, **extra: Any) -> Alert:
        return Alert(alert_id=alert_id, tenant=tenant, kind=kind, severity=severity, status=status,
                     client_id=client, episode_id=f"{client}-ep1", clinician_id=clinician, instrument="phq9",
                     opened_at=raised, updated_at=updated, evidence=[], version=version, **extra)

    moved = [AlertTransition(transition="raised", alert=alert(1, "open", raised), by="rapport/alerts", at=raised,
                             headline=f"{kind.replace('_', ' ')} for {client}", evidence_words="synthetic")]
    version, when = 1, raised
    if acknowledged_after is not None:
        version, when = 2, raised + acknowledged_after
        moved.append(AlertTransition(transition="acknowledged", alert=alert(2, "acknowledged", when), by=clinician
                                     or "someone", at=when, headline=moved[0].headline, evidence_words="synthetic"))
    if resolution is not None:
        when = when + HOUR
        moved.append(AlertTransition(transition="resolved", alert=alert(version + 1, "resolved", when,
                                                                        resolution=resolution),
                                     by="rapport/alerts", at=when, headline=moved[0].headline,
                                     evidence_words="synthetic"))
    return moved


def course(case_at_start: bool, recovered: bool | None, improved: bool, deteriorated: bool = False) -> dict[str, Any]:
    """talking_therapies as scoring puts it on a score (services/scoring/domain/talking_therapies.py)."""
    return {"case_at_start": case_at_start, "case_at_end": not recovered if case_at_start else False,
            "phq9": "improved" if improved else "none", "gad7": "deteriorated" if deteriorated else "none",
            "reliable_improvement": improved, "reliable_deterioration": deteriorated, "recovered": recovered,
            "reliably_recovered": None if recovered is None else recovered and improved}


def score(tenant: str, submission: str, client: str, clinician: str, instrument: str, when: datetime, total: float,
          talking_therapies: dict[str, Any] | None = None) -> ScoreComputed:
    ranges = {"phq9": 27.0, "gad7": 21.0, "srs": 40.0}
    return ScoreComputed(
        tenant=tenant, submission_id=submission, revision=1, client_id=client, episode_id=f"{client}-ep1",
        clinician_id=clinician, administered_at=when,
        score=Scored(instrument=instrument, instrument_version="1", kind="alliance" if instrument == "srs"
                     else "outcome", better="higher" if instrument == "srs" else "lower", total=total,
                     total_min=0, total_max=ranges[instrument], risk_checked=True),
        talking_therapies=talking_therapies)


def attendance(tenant: str, client: str, attended: int, ending: str, ended_at: datetime | None = None, *,
               recorded: bool = True) -> AttendanceRecorded:
    """The episode's attendance summary as the alerts service publishes it, with its ending."""
    last = ended_at or at(11, 1)
    return AttendanceRecorded(
        tenant=tenant, appointment_id=f"appt-{client}", revision=1, client_id=client, episode_id=f"{client}-ep1",
        status="ending" if recorded and ending != "open" else "attended",
        summary=AttendanceSummary(as_of=last + HOUR, attended=attended, last_attended_at=last, ending=ending,
                                  ending_recorded=recorded and ending != "open",
                                  ended_at=ended_at if ending != "open" else None))


def endings(tenant: str, other_tenant: str) -> list[AttendanceRecorded]:
    return [
        attendance(tenant, "c1", 6, "planned", at(11, 25)),
        attendance(tenant, "c2", 3, "unplanned", at(11, 12), recorded=False),
        attendance(tenant, "c4", 1, "unplanned", at(11, 14)),
        attendance(tenant, "c5", 5, "planned", at(12, 5)),
        attendance(tenant, "c6", 2, "open"),
        attendance(tenant, "c7", 8, "planned", at(11, 28)),
        attendance(other_tenant, "c1", 4, "planned", at(11, 20)),
    ]


def cohort(tenant: str, other_tenant: str) -> tuple[list[AlertTransition], list[ScoreComputed]]:
    moved = [
        *transitions(tenant, "a1", "not_on_track", "clin-a", "c1", at(11, 2), acknowledged_after=1 * HOUR),
        *transitions(tenant, "a2", "alliance_rupture", "clin-a", "c2", at(11, 3), acknowledged_after=2 * HOUR,
                     resolution="repaired"),
        *transitions(tenant, "a3", "alliance_rupture", "clin-a", "c3", at(11, 4), acknowledged_after=3 * HOUR,
                     resolution="unrepaired"),
        *transitions(tenant, "a4", "reliable_deterioration", "clin-a", "c1", at(11, 5), acknowledged_after=4 * HOUR),
        *transitions(tenant, "b1", "alliance_rupture", "clin-b", "c4", at(11, 6)),
        *transitions(tenant, "b2", "critical_item", "clin-b", "c4", at(11, 7), acknowledged_after=timedelta(minutes=30),
                     severity="critical"),
        *transitions(tenant, "b3", "not_on_track", "clin-b", "c5", at(10, 10), severity="medium"),
        *transitions(tenant, "b4", "critical_item", "clin-b", "c5", at(10, 12), resolution="cleared"),
        *transitions(tenant, "b5", "not_on_track", "clin-b", "c6", at(11, 8), resolution="back_on_track"),
        *transitions(other_tenant, "u1", "alliance_rupture", "clin-a", "c1", at(11, 9)),
    ]
    scores = [
        score(tenant, "s-c1-phq-1", "c1", "clin-a", "phq9", at(10, 1), 18),
        score(tenant, "s-c1-gad-1", "c1", "clin-a", "gad7", at(10, 1), 12, course(True, False, False)),
        score(tenant, "s-c1-phq-2", "c1", "clin-a", "phq9", at(11, 20), 6, course(True, True, True)),
        score(tenant, "s-c1-gad-2", "c1", "clin-a", "gad7", at(11, 20), 5, course(True, True, True)),
        score(tenant, "s-c2-phq-2", "c2", "clin-a", "phq9", at(11, 10), 11, course(True, False, True)),
        score(tenant, "s-c3-srs-1", "c3", "clin-a", "srs", at(10, 20), 30),
        score(tenant, "s-c4-gad-2", "c4", "clin-b", "gad7", at(11, 12), 7, course(False, None, False, True)),
        score(tenant, "s-c5-phq-1", "c5", "clin-b", "phq9", at(10, 10), 16),
        score(tenant, "s-c5-gad-1", "c5", "clin-b", "gad7", at(10, 10), 11, course(True, False, False)),
        score(tenant, "s-c5-srs-2", "c5", "clin-b", "srs", at(11, 15), 33),
        score(tenant, "s-c5-gad-3", "c5", "clin-b", "gad7", at(12, 2), 5, course(True, True, True)),
        score(tenant, "s-c5-phq-3", "c5", "clin-b", "phq9", at(12, 2), 9, course(True, True, True)),
        score(tenant, "s-c6-phq-1", "c6", "clin-b", "phq9", at(11, 16), 14),
        score(tenant, "s-c7-phq-1", "c7", "clin-b", "phq9", at(10, 5), 5),
        score(tenant, "s-c7-gad-1", "c7", "clin-b", "gad7", at(10, 5), 4, course(False, None, False)),
        score(tenant, "s-c7-phq-2", "c7", "clin-b", "phq9", at(10, 30), 11, course(False, None, False, True)),
        score(tenant, "s-c7-gad-2", "c7", "clin-b", "gad7", at(10, 30), 6, course(False, None, False, True)),
        score(other_tenant, "s-u1", "c1", "clin-a", "phq9", at(11, 20), 4, course(True, True, True)),
    ]
    return moved, scores


async def seed(sessions: async_sessionmaker[AsyncSession], tenant: str, other_tenant: str) -> None:
    moved, scores = cohort(tenant, other_tenant)
    async with sessions() as session, session.begin():
        await keep_transitions(session, moved)
        await keep_scores(session, scores)
        await keep_attendance(session, endings(tenant, other_tenant))


# what the figures come to for November 2026, every clinician
EXPECTED_NOVEMBER: dict[str, Any] = {
    "open_alerts": {"total": 4, "unacknowledged": 1,
                    "by_kind": {"alliance_rupture": 1, "critical_item": 1, "not_on_track": 1,
                                "reliable_deterioration": 1},
                    "by_clinician": {"clin-a": 2, "clin-b": 2}},
    # clin-a: 1, 2, 3, 4 h -> median 2.5 h, p90 3 h + 0.7 h; clin-b: 30 min, one waiting;
    # all: 0.5, 1, 2, 3, 4 h -> median 2 h, p90 3 h + 0.6 h
    "time_to_acknowledge": {"clin-a": (4, 0, 9000.0, 13320.0), "clin-b": (1, 1, 1800.0, 1800.0),
                            "all": (5, 1, 7200.0, 12960.0)},
    "not_on_track": (5, 2, 0.4),
    "ruptures": (3, 1, 1, 1),
    # ended in November: c1 and c7 planned, c2 and c4 unplanned; c4 had one session, c2 one PHQ-9 only;
    # c1 and c7 finished a course: c1 a case at the start, recovered and improved, c7 not a case and worse
    "talking_therapies": {"ended": 4, "planned": 2, "unplanned": 2, "dropout_rate": 0.5,
                          "fewer_than_two_contacts": 1, "unpaired": 1, "finished": 2, "case_at_start": 1,
                          "recovered": 1, "recovery_rate": 1.0, "reliable_improvement": 1,
                          "reliable_improvement_rate": 0.5, "reliable_deterioration": 1, "reliably_recovered": 1,
                          "reliable_recovery_rate": 1.0},
    # clinician: (ended, unplanned, fewer than two sessions, finished, recovered)
    "endings_by_clinician": {"clin-a": (2, 1, 0, 1, 1), "clin-b": (2, 1, 1, 1, 0)},
}
