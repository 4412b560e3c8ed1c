"""The gateway's read model of alerts, scores and attendance: kept by the projection (handlers.py)
from the `alert.*`, `score.computed` and `attendance.recorded` events, read by the alert and record
API (records_api.py) and the pages. The gateway reads no other service's tables.

Who sees what (`Viewer`): a lead the whole tenant; a clinician the alerts and episodes that name them
as the clinician. Anything else is answered exactly like a record that does not exist.

Writes keep the newest: an alert's highest version, a score's highest revision (a re-placed score,
same revision with new change figures, replaces the stored one), an episode's latest attendance
summary (by its `as_of`), so events replayed or redelivered out of order never move the record
backwards.

An episode is listed once it has a score (its clinician, which decides who sees it, comes with the
scores; `attendance.recorded` names none); its attendance summary is shown beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, CompoundSelect, Table, false, func, select, true, union
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.gateway.models import AlertTransitionView, AlertView, AttendanceView, ScoreView
from rapport.services.gateway.tokens import Principal
from rapport.shared.contracts.alert import Alert, AlertKind, AlertStatus, AlertTransition, Severity
from rapport.shared.contracts.attendance import AttendanceRecorded, AttendanceSummary, Ending, MissedSession
from rapport.shared.contracts.score import ScoreComputed
from rapport.shared.db.upsert import insert_ignoring_conflicts, upsert

alerts_table = cast(Table, AlertView.__table__)
transitions_table = cast(Table, AlertTransitionView.__table__)
scores_table = cast(Table, ScoreView.__table__)
attendance_table = cast(Table, AttendanceView.__table__)

SEVERITY_RANK: dict[str, int] = {"critical": 0, "high": 1, "medium": 2, "low": 3}
MAX_PAGE = 200


def urgency(kind: str, severity: str) -> int:
    """Worklist order: risk items first, then by severity (ties: the oldest first)."""
    return SEVERITY_RANK.get(severity, 3) + (0 if kind == "critical_item" else len(SEVERITY_RANK))


@dataclass(frozen=True)
class Viewer:
    """Whose records a caller may see: the tenant's, and within it only a clinician's own."""

    tenant: str
    clinician: str | None = None
    whole_tenant: bool = False

    @classmethod
    def of(cls, principal: Principal) -> Viewer:
        return cls(principal.tenant, principal.clinician, whole_tenant=principal.role == "lead")

    def sees(self, clinician_id: str | None) -> bool:
        return self.whole_tenant or (self.clinician is not None and clinician_id == self.clinician)

    def scope(self, clinician_column: Any) -> ColumnElement[bool]:
        if self.whole_tenant:
            return true()
        return cast(ColumnElement[bool], clinician_column == self.clinician) if self.clinician else false()


# what the API and the pages show


class TransitionShown(BaseModel):
    version: int
    transition: str
    by: str
    at: datetime
    reason: str | None = None
    status: AlertStatus
    severity: Severity


class AlertShown(BaseModel):
    """An alert as a therapist reads it: the state, the headline, the evidence in words, the prompt."""

    alert_id: str
    kind: AlertKind
    severity: Severity
    status: AlertStatus
    client_id: str
    episode_id: str
    clinician_id: str | None
    instrument: str
    subscale: str | None
    parts: list[str] = Field(default_factory=list, description=(
        "the alliance parts the alert is about (goals, tasks, bond, ...): the parts that dropped, or the weakest "
        "part a drop of the total named; empty for a total or an outcome measure"))
    opened_at: datetime
    updated_at: datetime
    headline: str
    evidence_words: str
    repair_prompt: str | None
    priority_raised: bool
    escalated: bool
    resolution: str | None
    resolved_reason: str | None
    version: int
    evidence: list[dict[str, Any]] = Field(description="what each rule that fired looked at: scores, thresholds")
    transitions: list[TransitionShown] = Field(default_factory=list, description="only on GET /alerts/{id}")

    @classmethod
    def of(cls, alert: Alert, headline: str, evidence_words: str,
           transitions: Sequence[TransitionShown] = ()) -> AlertShown:
        return cls(
            alert_id=alert.alert_id, kind=alert.kind, severity=alert.severity, status=alert.status,
            client_id=alert.client_id, episode_id=alert.episode_id, clinician_id=alert.clinician_id,
            instrument=alert.instrument, subscale=alert.subscale, parts=list(alert.parts_named),
            opened_at=alert.opened_at,
            updated_at=alert.updated_at, headline=headline, evidence_words=evidence_words,
            repair_prompt=alert.repair_prompt, priority_raised=alert.priority_raised, escalated=alert.escalated,
            resolution=alert.resolution, resolved_reason=alert.resolved_reason, version=alert.version,
            evidence=[e.model_dump(mode="json") for e in alert.evidence], transitions=list(transitions),
        )

    @classmethod
    def of_transition(cls, transition: AlertTransition) -> AlertShown:
        alert = transition.alert
        return cls.of(alert, transition.headline or alert.kind, transition.evidence_words or "")


class AlertPage(BaseModel):
    alerts: list[AlertShown]
    total: int = Field(description="how many alerts match the filters, on every page")
    offset: int
    limit: int


class ScoreShown(BaseModel):
    """One administration as the record keeps it: its total, subscales and change figures, never the answers."""

    submission_id: str
    revision: int
    instrument: str
    administered_at: datetime
    session_number: int | None
    total: float
    score: dict[str, Any] = Field(description="the scored measure: total, range, subscales, direction")
    change: dict[str, Any] | None = Field(description="from the episode's baseline and the previous score")
    parameters: dict[str, Any] = Field(description="cutoff and reliable-change values used, with their sources")
    talking_therapies: dict[str, Any] | None = None


class AttendanceShown(BaseModel):
    """The episode's attendance as the alerts service counts it (its disengagement rule's policy says
    what is late and whose cancellations count): a missed session is a no-show or a counted late
    cancellation."""

    as_of: datetime = Field(description="when the alerts service last counted it (its latest appointment state)")
    attended: int
    no_shows: int
    cancelled: int = Field(description="every cancellation, late or not, by the client or the clinic")
    late_cancellations: int
    missed_in_a_row: int = Field(description="missed sessions since the last attended one")
    missed_since_attended: list[MissedSession] = Field(description="the latest ten of them")
    cancelled_since_attended: int = Field(description="cancellations since the last attended session that are "
                                                      "not missed sessions (early, or the clinic's)")
    last_attended_at: datetime | None
    days_since_attended: float | None = Field(description="the gap since the last attended session: until now "
                                                          "while the episode is open, until as_of once it ended")
    next_booked_at: datetime | None = Field(description="the next booked session after as_of, if any")
    ending: Ending | Literal["open"] = Field(description="planned, unplanned, or still open")
    ending_recorded: bool = Field(description="the clinic recorded the ending (else read from the attendance)")
    ended_at: datetime | None

    @classmethod
    def of(cls, summary: AttendanceSummary, now: datetime) -> AttendanceShown:
        days = summary.days_since_attended
        if summary.ending == "open" and summary.last_attended_at is not None:
            days = round(max(0.0, (now - summary.last_attended_at).total_seconds()) / 86400, 2)
        return cls(**summary.model_dump(include=set(cls.model_fields) - {"days_since_attended"}),
                   days_since_attended=days)


class EpisodeShown(BaseModel):
    client_id: str
    episode_id: str
    clinician_id: str | None
    first_administered_at: datetime | None = Field(description="none for an episode with appointments and no score yet")
    last_administered_at: datetime | None
    scores: int
    instruments: list[str]
    open_alerts: int
    attendance: AttendanceShown | None = Field(default=None, description="none until an appointment is recorded")


class EpisodeRecord(BaseModel):
    client_id: str
    episode_id: str
    scores: list[ScoreShown]
    alerts: list[AlertShown] = Field(description="every alert of the episode, resolved ones too, with transitions")
    attendance: AttendanceShown | None = Field(default=None, description="none until an appointment is recorded")


@dataclass(frozen=True)
class AlertFilters:
    status: Sequence[str] = ()
    kind: Sequence[str] = ()
    severity: Sequence[str] = ()
    clinician: str | None = None
    client: str | None = None


# the projection's writes


async def keep_transitions(session: AsyncSession, transitions: Sequence[AlertTransition]) -> None:
    if not transitions:
        return
    latest: dict[tuple[str, str], AlertTransition] = {}
    for t in transitions:
        key = (t.alert.tenant, t.alert.alert_id)
        if key not in latest or t.alert.version >= latest[key].alert.version:
            latest[key] = t
    rows = [_alert_row(t) for t in latest.values()]
    statement = upsert(session, alerts_table, ["tenant", "alert_id"],
                       only_if=lambda new: new.version >= alerts_table.c.version)
    await session.execute(statement, rows)
    history = {(t.alert.tenant, t.alert.alert_id, t.alert.version, t.transition): {
        "tenant": t.alert.tenant, "alert_id": t.alert.alert_id, "version": t.alert.version,
        "transition": t.transition, "by": t.by, "at": t.at, "reason": t.reason, "status": t.alert.status,
        "severity": t.alert.severity} for t in transitions}
    await session.execute(insert_ignoring_conflicts(
        session, transitions_table, ["tenant", "alert_id", "version", "transition"]), list(history.values()))


def _alert_row(t: AlertTransition) -> dict[str, Any]:
    alert = t.alert
    return {"tenant": alert.tenant, "alert_id": alert.alert_id, "version": alert.version, "kind": alert.kind,
            "severity": alert.severity, "urgency": urgency(alert.kind, alert.severity), "status": alert.status,
            "client_id": alert.client_id, "episode_id": alert.episode_id, "clinician_id": alert.clinician_id,
            "opened_at": alert.opened_at, "updated_at": alert.updated_at, "headline": t.headline or alert.kind,
            "evidence_words": t.evidence_words or "", "alert": alert.model_dump(mode="json")}


async def keep_scores(session: AsyncSession, scores: Sequence[ScoreComputed]) -> None:
    if not scores:
        return
    latest: dict[tuple[str, str], ScoreComputed] = {}
    for s in scores:
        latest[(s.tenant, s.submission_id)] = s  # a batch is in stream order: the later event is the newer
    rows = [{"tenant": s.tenant, "submission_id": s.submission_id, "revision": s.revision, "client_id": s.client_id,
             "episode_id": s.episode_id, "clinician_id": s.clinician_id, "instrument": s.score.instrument,
             "administered_at": s.administered_at, "session_number": s.session_number, "total": s.score.total,
             "score": s.model_dump(mode="json", include={"score", "change", "parameters", "talking_therapies"})}
            for s in latest.values()]
    statement = upsert(session, scores_table, ["tenant", "submission_id"],
                       only_if=lambda new: new.revision >= scores_table.c.revision)
    await session.execute(statement, rows)


async def keep_attendance(session: AsyncSession, recorded: Sequence[AttendanceRecorded]) -> None:
    """Each episode's newest summary, and the clinician of its latest appointment that named one (an
    ending names none, and keeps the one there); an appointment placed in no episode, or a state that
    changed nothing (published without a summary), leaves the record as it is."""
    latest: dict[tuple[str, str, str], tuple[AttendanceSummary, str | None]] = {}
    for r in recorded:
        if r.episode_id is None or r.summary is None:
            continue
        key = (r.tenant, r.client_id, r.episode_id)
        if key not in latest or r.summary.as_of >= latest[key][0].as_of:
            latest[key] = (r.summary, r.clinician_id or (latest[key][1] if key in latest else None))
    if not latest:
        return
    rows = [{"tenant": tenant, "client_id": client, "episode_id": episode, "as_of": summary.as_of,
             "summary": summary.model_dump(mode="json"), "clinician_id": clinician}
            for (tenant, client, episode), (summary, clinician) in latest.items()]
    statement = upsert(session, attendance_table, ["tenant", "client_id", "episode_id"],
                       only_if=lambda new: new.as_of >= attendance_table.c.as_of, kept_if_null=["clinician_id"])
    await session.execute(statement, rows)


# the API's reads


def _shown(row: Any, transitions: Sequence[TransitionShown] = ()) -> AlertShown:
    return AlertShown.of(Alert.model_validate(row.alert), row.headline, row.evidence_words, transitions)


class Records:
    def __init__(self, sessions: async_sessionmaker[AsyncSession],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._sessions = sessions
        self._clock = clock

    async def alerts(self, viewer: Viewer, filters: AlertFilters, *, offset: int = 0,
                     limit: int = 50) -> AlertPage:
        """Most urgent first: risk items, then by severity, the oldest first within each."""
        conditions: list[ColumnElement[bool]] = [alerts_table.c.tenant == viewer.tenant,
                                                 viewer.scope(alerts_table.c.clinician_id)]
        for column, wanted in (("status", filters.status), ("kind", filters.kind), ("severity", filters.severity)):
            if wanted:
                conditions.append(alerts_table.c[column].in_(list(wanted)))
        if filters.clinician is not None:
            conditions.append(alerts_table.c.clinician_id == filters.clinician)
        if filters.client is not None:
            conditions.append(alerts_table.c.client_id == filters.client)
        limit = max(1, min(limit, MAX_PAGE))
        async with self._sessions() as session:
            counted = select(func.count()).select_from(alerts_table).where(*conditions)
            total = (await session.execute(counted)).scalar_one()
            rows = (await session.execute(
                select(alerts_table).where(*conditions)
                .order_by(alerts_table.c.urgency, alerts_table.c.opened_at, alerts_table.c.alert_id)
                .offset(max(0, offset)).limit(limit))).all()
        return AlertPage(alerts=[_shown(r) for r in rows], total=int(total), offset=max(0, offset), limit=limit)

    async def alert(self, viewer: Viewer, alert_id: str) -> AlertShown | None:
        async with self._sessions() as session:
            row = (await session.execute(select(alerts_table).where(
                alerts_table.c.tenant == viewer.tenant, alerts_table.c.alert_id == alert_id,
                viewer.scope(alerts_table.c.clinician_id)))).first()
            if row is None:
                return None
            history = await _transitions(session, viewer.tenant, [alert_id])
        return _shown(row, history.get(alert_id, []))

    async def episodes(self, viewer: Viewer, client_id: str) -> list[EpisodeShown] | None:
        """The client's episodes the viewer may see, the latest first; None when there is none."""
        async with self._sessions() as session:
            visible = _visible_episodes(viewer, client_id)
            rows = (await session.execute(
                select(scores_table.c.episode_id, func.max(scores_table.c.clinician_id),
                       func.min(scores_table.c.administered_at), func.max(scores_table.c.administered_at),
                       func.count(), func.count(func.distinct(scores_table.c.instrument)))
                .where(scores_table.c.tenant == viewer.tenant, scores_table.c.client_id == client_id,
                       scores_table.c.episode_id.in_(visible))
                .group_by(scores_table.c.episode_id))).all()
            instruments = (await session.execute(
                select(scores_table.c.episode_id, scores_table.c.instrument).distinct()
                .where(scores_table.c.tenant == viewer.tenant, scores_table.c.client_id == client_id,
                       scores_table.c.episode_id.in_(visible)))).all()
            open_counts: dict[str, int] = {episode: count for episode, count in (await session.execute(
                select(alerts_table.c.episode_id, func.count())
                .where(alerts_table.c.tenant == viewer.tenant, alerts_table.c.client_id == client_id,
                       alerts_table.c.status != "resolved", alerts_table.c.episode_id.in_(visible))
                .group_by(alerts_table.c.episode_id))).all()}
            attendance = await self._attendance(session, viewer.tenant, client_id, visible)
            booked_only = (await session.execute(
                select(attendance_table.c.episode_id, attendance_table.c.clinician_id, attendance_table.c.as_of)
                .where(attendance_table.c.tenant == viewer.tenant, attendance_table.c.client_id == client_id,
                       attendance_table.c.episode_id.in_(visible),
                       attendance_table.c.episode_id.not_in({r[0] for r in rows})))).all()
        if not rows and not booked_only:
            return None
        by_episode: dict[str, list[str]] = {}
        for episode, instrument in instruments:
            by_episode.setdefault(episode, []).append(instrument)
        shown = [EpisodeShown(client_id=client_id, episode_id=episode, clinician_id=clinician,
                              first_administered_at=first, last_administered_at=last, scores=count,
                              instruments=sorted(by_episode.get(episode, [])), open_alerts=open_counts.get(episode, 0),
                              attendance=attendance.get(episode))
                 for episode, clinician, first, last, count, _ in rows]
        latest = {e.episode_id: e.last_administered_at for e in shown} | {e: as_of for e, _c, as_of in booked_only}
        shown += [EpisodeShown(client_id=client_id, episode_id=episode, clinician_id=clinician,
                               first_administered_at=None, last_administered_at=None, scores=0, instruments=[],
                               open_alerts=open_counts.get(episode, 0), attendance=attendance.get(episode))
                  for episode, clinician, _as_of in booked_only]
        return sorted(shown, key=lambda e: latest[e.episode_id] or datetime.min.replace(tzinfo=UTC), reverse=True)

    async def episode(self, viewer: Viewer, client_id: str, episode_id: str) -> EpisodeRecord | None:
        """Every score of the episode in administration order, and every alert on it."""
        async with self._sessions() as session:
            where = (scores_table.c.tenant == viewer.tenant, scores_table.c.client_id == client_id,
                     scores_table.c.episode_id == episode_id)
            seen = (await session.execute(select(func.count()).select_from(scores_table).where(
                *where, viewer.scope(scores_table.c.clinician_id)))).scalar_one()
            if not seen and not (await session.execute(select(func.count()).select_from(attendance_table).where(
                    attendance_table.c.tenant == viewer.tenant, attendance_table.c.client_id == client_id,
                    attendance_table.c.episode_id == episode_id,
                    viewer.scope(attendance_table.c.clinician_id)))).scalar_one():
                return None
            rows = (await session.execute(select(scores_table).where(*where).order_by(
                scores_table.c.administered_at, scores_table.c.submission_id))).all()
            alert_rows = (await session.execute(select(alerts_table).where(
                alerts_table.c.tenant == viewer.tenant, alerts_table.c.client_id == client_id,
                alerts_table.c.episode_id == episode_id).order_by(alerts_table.c.opened_at))).all()
            history = await _transitions(session, viewer.tenant, [r.alert_id for r in alert_rows])
            attendance = await self._attendance(session, viewer.tenant, client_id, [episode_id])
        scores = [ScoreShown(submission_id=r.submission_id, revision=r.revision, instrument=r.instrument,
                             administered_at=r.administered_at, session_number=r.session_number, total=r.total,
                             score=r.score["score"], change=r.score.get("change"),
                             parameters=r.score.get("parameters") or {},
                             talking_therapies=r.score.get("talking_therapies")) for r in rows]
        return EpisodeRecord(client_id=client_id, episode_id=episode_id, scores=scores,
                             alerts=[_shown(r, history.get(r.alert_id, [])) for r in alert_rows],
                             attendance=attendance.get(episode_id))

    async def _attendance(self, session: AsyncSession, tenant: str, client_id: str,
                          episodes: CompoundSelect[tuple[str]] | Sequence[str]) -> dict[str, AttendanceShown]:
        """The attendance of the given episodes, which the caller has already found the viewer may see."""
        among = episodes if isinstance(episodes, CompoundSelect) else list(episodes)
        rows = (await session.execute(select(attendance_table.c.episode_id, attendance_table.c.summary).where(
            attendance_table.c.tenant == tenant, attendance_table.c.client_id == client_id,
            attendance_table.c.episode_id.in_(among)))).all()
        now = self._clock()
        return {episode: AttendanceShown.of(AttendanceSummary.model_validate(summary), now)
                for episode, summary in rows}


def _visible_episodes(viewer: Viewer, client_id: str) -> CompoundSelect[tuple[str]]:
    """The client's episodes the viewer may see: by their scores' clinician, or, for an episode with
    appointments, by the clinician the appointments name."""
    scored = select(scores_table.c.episode_id).where(
        scores_table.c.tenant == viewer.tenant, scores_table.c.client_id == client_id,
        viewer.scope(scores_table.c.clinician_id))
    booked = select(attendance_table.c.episode_id).where(
        attendance_table.c.tenant == viewer.tenant, attendance_table.c.client_id == client_id,
        viewer.scope(attendance_table.c.clinician_id))
    return union(scored, booked)


async def _transitions(session: AsyncSession, tenant: str,
                       alert_ids: Sequence[str]) -> dict[str, list[TransitionShown]]:
    if not alert_ids:
        return {}
    rows = (await session.execute(select(transitions_table).where(
        transitions_table.c.tenant == tenant, transitions_table.c.alert_id.in_(list(alert_ids)))
        .order_by(transitions_table.c.version, transitions_table.c.at))).all()
    found: dict[str, list[TransitionShown]] = {}
    for r in rows:
        found.setdefault(r.alert_id, []).append(TransitionShown(
            version=r.version, transition=r.transition, by=r.by, at=r.at, reason=r.reason,
            status=cast(Literal["open", "acknowledged", "resolved"], r.status),
            severity=cast(Literal["critical", "high", "medium", "low"], r.severity)))
    return found
