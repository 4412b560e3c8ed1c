"""In-memory repositories of our own code, for handler-logic tests without a database (issue 10):
fakes of Rapport's ports, never of a broker or a database."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from rapport.services.alerts.repository import EpisodeKey
from rapport.services.alerts.rules.policy import ClinicalPolicy
from rapport.services.alerts.rules.trajectory import FittedTrajectory
from rapport.services.alerts.unit_of_work import AlertsUnitOfWork
from rapport.services.ingest.admission import Admission, AttendanceAdmission, StoredAppointment, record_id
from rapport.services.ingest.repository import Key
from rapport.services.ingest.unit_of_work import AttendanceUnitOfWork, IngestUnitOfWork
from rapport.services.scoring.episodes import Span
from rapport.services.scoring.repository import ClientKey, SeriesKey
from rapport.services.scoring.series import Point, Summary
from rapport.services.scoring.unit_of_work import ScoringUnitOfWork
from rapport.shared.contracts.alert import Alert, AlertTransition
from rapport.shared.contracts.attendance import Attendance, EpisodeEnding
from rapport.shared.contracts.score import ScoreComputed
from rapport.shared.contracts.submission import Submission


class InMemorySubmissions:
    def __init__(self) -> None:
        self.stored: dict[Key, tuple[int, str, Submission]] = {}
        self.loads = 0

    async def load_stored(self, keys: Sequence[Key]) -> dict[Key, tuple[int, str]]:
        self.loads += 1
        return {k: self.stored[k][:2] for k in keys if k in self.stored}

    async def save(self, admitted: Sequence[tuple[Submission, Admission]], now: datetime) -> None:
        for submission, admission in admitted:
            self.stored[(submission.tenant, submission.submission_id)] = (
                admission.revision, admission.content_hash, submission)


def ingest_unit_of_work(now: datetime, submissions: InMemorySubmissions | None = None) -> IngestUnitOfWork:
    return IngestUnitOfWork(submissions or InMemorySubmissions(), now)


class InMemoryAppointments:
    """Ingest's stored appointment states, with SqlAppointments' semantics (a newer state replaces it)."""

    def __init__(self) -> None:
        self.stored: dict[Key, tuple[StoredAppointment, Attendance | EpisodeEnding]] = {}
        self.loads = 0

    async def load_stored(self, keys: Sequence[Key]) -> dict[Key, StoredAppointment]:
        self.loads += 1
        return {k: self.stored[k][0] for k in keys if k in self.stored}

    async def save(self, admitted: Sequence[tuple[Attendance | EpisodeEnding, AttendanceAdmission]],
                   now: datetime) -> None:
        for attendance, admission in admitted:
            self.stored[(attendance.tenant, record_id(attendance))] = (
                (admission.revision, admission.content_hash, attendance.recorded_at, attendance.version), attendance)


def attendance_unit_of_work(now: datetime, appointments: InMemoryAppointments) -> AttendanceUnitOfWork:
    return AttendanceUnitOfWork(appointments, now)


class InMemoryRecord:
    """Scoring's record as dictionaries, with the semantics SqlRecord has: a newer revision of a score
    replaces the older, summaries are inserted or replaced, spans are the client's episodes."""

    def __init__(self) -> None:
        self.scores: dict[tuple[str, str], ScoreComputed] = {}
        self.summaries: dict[SeriesKey, Summary] = {}
        self.spans: dict[ClientKey, list[Span]] = {}
        self.reads: list[str] = []

    async def load_summaries(self, keys: Sequence[SeriesKey]) -> dict[SeriesKey, Summary]:
        self.reads.append("summaries")
        return {k: self.summaries[k] for k in keys if k in self.summaries}

    async def load_points(self, keys: Collection[SeriesKey]) -> dict[SeriesKey, list[Point]]:
        if keys:
            self.reads.append("points")
        points: dict[SeriesKey, list[Point]] = {k: [] for k in keys}
        for s in self.scores.values():
            key = (s.tenant, s.client_id, s.episode_id, s.score.instrument)
            if key in points:
                points[key].append(Point(s.submission_id, s.score.total, s.administered_at))
        return points

    async def save(self, computed: Sequence[ScoreComputed], summaries: dict[SeriesKey, Summary],
                   known: set[SeriesKey]) -> None:
        for c in computed:
            stored = self.scores.get((c.tenant, c.submission_id))
            if stored is None or stored.revision <= c.revision:
                self.scores[(c.tenant, c.submission_id)] = c
        self.summaries |= summaries

    async def stored_scores(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], ScoreComputed]:
        if keys:
            self.reads.append("scores")
        return {k: self.scores[k] for k in keys if k in self.scores}

    async def placed_episodes(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        return {k: self.scores[k].episode_id for k in keys if k in self.scores}

    async def load_spans(self, clients: Sequence[ClientKey]) -> dict[ClientKey, list[Span]]:
        return {c: list(self.spans.get(c, [])) for c in clients}

    async def save_spans(self, before: dict[ClientKey, list[Span]], after: dict[ClientKey, list[Span]]) -> None:
        self.spans |= {c: list(spans) for c, spans in after.items()}


def scoring_unit_of_work(now: datetime, record: InMemoryRecord) -> ScoringUnitOfWork:
    return ScoringUnitOfWork(record, now)


class InMemoryAlertRecord:
    """The alerts service's record as dictionaries: episode states with versions, alerts by id with
    their transitions, the latest revision of each score seen."""

    def __init__(self) -> None:
        self.episodes: dict[EpisodeKey, tuple[int, dict[str, Any]]] = {}
        self.alerts: dict[str, Alert] = {}
        self.transitions: list[tuple[str, AlertTransition]] = []
        self.seen: dict[tuple[str, str], ScoreComputed] = {}
        self.fits: dict[str, dict[str, FittedTrajectory]] = {}
        self.appointments: dict[tuple[str, str], tuple[Attendance, int, str | None]] = {}
        self.policies: dict[str, list[ClinicalPolicy]] = {}  # tenant -> versions, oldest first
        self.reads: list[str] = []

    async def load_episodes(self, keys: Iterable[EpisodeKey]) -> dict[EpisodeKey, tuple[int, dict[str, Any]]]:
        return {k: self.episodes[k] for k in keys if k in self.episodes}

    async def save_episodes(self, states: Mapping[EpisodeKey, tuple[int | None, dict[str, Any], datetime]]) -> None:
        for key, (version, state, _at) in states.items():
            self.episodes[key] = ((version or 0) + 1, state)

    def _of(self, keys: Iterable[EpisodeKey], open_only: bool) -> dict[EpisodeKey, list[Alert]]:
        found: dict[EpisodeKey, list[Alert]] = {k: [] for k in keys}
        for a in self.alerts.values():
            key = (a.tenant, a.client_id, a.episode_id)
            if key in found and not (open_only and a.status == "resolved"):
                found[key].append(a)
        return found

    async def open_alerts(self, keys: Iterable[EpisodeKey]) -> dict[EpisodeKey, list[Alert]]:
        return self._of(keys, open_only=True)

    async def episode_alerts(self, keys: Collection[EpisodeKey]) -> dict[EpisodeKey, list[Alert]]:
        return self._of(keys, open_only=False)

    async def get_alert(self, tenant: str, alert_id: str) -> Alert | None:
        alert = self.alerts.get(alert_id)
        return alert if alert is not None and alert.tenant == tenant else None

    async def remember_scores(self, scores: Sequence[ScoreComputed]) -> None:
        for s in scores:
            stored = self.seen.get((s.tenant, s.submission_id))
            if stored is None or stored.revision <= s.revision:
                self.seen[(s.tenant, s.submission_id)] = s

    async def episode_scores(self, keys: Collection[EpisodeKey]) -> dict[EpisodeKey, list[ScoreComputed]]:
        found: dict[EpisodeKey, list[ScoreComputed]] = {k: [] for k in keys}
        for s in sorted(self.seen.values(), key=lambda s: (s.administered_at, s.submission_id)):
            if (key := (s.tenant, s.client_id, s.episode_id)) in found:
                found[key].append(s)
        return found

    async def record_transitions(self, changes: Sequence[AlertTransition], event_ids: Sequence[str]) -> None:
        for change, event_id in zip(changes, event_ids, strict=True):
            self.alerts[change.alert.alert_id] = change.alert
            self.transitions.append((event_id, change))

    async def trajectory_fits(self, tenants: Iterable[str]) -> dict[str, dict[str, FittedTrajectory]]:
        return {t: self.fits.get(t, {}) for t in tenants}

    async def clinical_policies(self, tenants: Iterable[str]) -> dict[str, ClinicalPolicy]:
        self.reads.append("policies")
        return {t: self.policies[t][-1] for t in tenants if self.policies.get(t)}


    async def placed_appointments(self, keys: Iterable[tuple[str, str]]
                                  ) -> dict[tuple[str, str], tuple[int, str | None]]:
        self.reads.append("placed")
        return {k: (self.appointments[k][1], self.appointments[k][2]) for k in keys if k in self.appointments}

    async def latest_episodes(self, clients: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        self.reads.append("latest_episodes")
        wanted, found = set(clients), {}
        for (tenant, client, episode), (_v, state) in sorted(self.episodes.items(),
                                                             key=lambda item: item[1][1]["latest_at"]):
            if (tenant, client) in wanted and not state["latest_at"].startswith("1900"):
                found[(tenant, client)] = episode
        return found

    async def remember_appointments(self, placed: Sequence[tuple[Attendance, int, str | None]]) -> None:
        for attendance, revision, episode in placed:
            key = (attendance.tenant, attendance.appointment_id)
            if key not in self.appointments or self.appointments[key][1] <= revision:
                self.appointments[key] = (attendance, revision, episode)

    async def episode_appointments(self, keys: Collection[EpisodeKey]) -> dict[EpisodeKey, list[Attendance]]:
        self.reads.append("appointments")
        found: dict[EpisodeKey, list[Attendance]] = {k: [] for k in keys}
        for attendance, _revision, episode in self.appointments.values():
            if episode is not None and (key := (attendance.tenant, attendance.client_id, episode)) in found:
                found[key].append(attendance)
        return found


def alerts_unit_of_work(now: datetime, record: InMemoryAlertRecord) -> AlertsUnitOfWork:
    return AlertsUnitOfWork(record, now)
