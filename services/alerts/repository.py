"""Reads and writes of alerts, transitions, episode state and the scores the service has seen.

Two replicas never evaluate one episode at once: on PostgreSQL a batch locks its episodes' rows
FOR UPDATE (in key order, so replicas cannot deadlock) until it commits, and a brand-new episode
inserted by two replicas at once fails one of them on the primary key, which retries and then
reads the other's row. SQLite has a single writer (BEGIN IMMEDIATE). The version column counts
the episode's evaluations."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from rapport.services.alerts.models import (
    EpisodeRecord,
    SeenAppointment,
    SeenScore,
    StoredAlert,
    StoredClinicalPolicy,
    StoredTrajectoryFit,
    StoredTransition,
)
from rapport.services.alerts.rules.policy import ClinicalPolicy, PolicyValues
from rapport.services.alerts.rules.state import NO_SCORE_YET
from rapport.services.alerts.rules.trajectory import FittedTrajectory, read_fit
from rapport.shared.contracts.alert import Alert, AlertTransition
from rapport.shared.contracts.attendance import Attendance
from rapport.shared.contracts.score import ScoreComputed
from rapport.shared.db.engine import is_postgres
from rapport.shared.db.upsert import upsert

EpisodeKey = tuple[str, str, str]  # tenant, client, episode
AppointmentKey = tuple[str, str]  # tenant, appointment
ClientKey = tuple[str, str]  # tenant, client

episodes = cast(Table, EpisodeRecord.__table__)
alerts = cast(Table, StoredAlert.__table__)
transitions = cast(Table, StoredTransition.__table__)
seen = cast(Table, SeenScore.__table__)
fits = cast(Table, StoredTrajectoryFit.__table__)
appointments = cast(Table, SeenAppointment.__table__)
policies = cast(Table, StoredClinicalPolicy.__table__)


def _alert_row(alert: Alert) -> dict[str, Any]:
    return {
        "alert_id": alert.alert_id, "tenant": alert.tenant, "client_id": alert.client_id,
        "episode_id": alert.episode_id, "clinician_id": alert.clinician_id, "kind": alert.kind,
        "instrument": alert.instrument, "subscale": alert.subscale, "severity": alert.severity,
        "status": alert.status, "opened_at": alert.opened_at, "updated_at": alert.updated_at,
        "version": alert.version, "policy_version": alert.policy_version, "document": alert.model_dump(mode="json"),
    }


async def tenants_with_scores(session: AsyncSession) -> list[str]:
    return list((await session.execute(select(seen.c.tenant).distinct().order_by(seen.c.tenant))).scalars())


async def tenant_scores(session: AsyncSession, tenant: str) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
    """(client, episode, score document) of every score of a tenant, by episode in administration order."""
    query = (select(seen.c.client_id, seen.c.episode_id, seen.c.document).where(seen.c.tenant == tenant)
             .order_by(seen.c.client_id, seen.c.episode_id, seen.c.administered_at, seen.c.submission_id))
    result = await session.stream(query.execution_options(yield_per=1000))
    async for row in result:
        yield row.client_id, row.episode_id, row.document


async def save_trajectory_fits(session: AsyncSession, tenant: str, fitted: Sequence[FittedTrajectory]) -> None:
    """Replace the tenant's fits: an instrument without a new fit keeps none."""
    await session.execute(fits.delete().where(fits.c.tenant == tenant))
    if fitted:
        await session.execute(fits.insert(), [
            {"tenant": f.tenant, "instrument": f.instrument, "fitted_at": f.fitted_at,
             "document": f.model_dump(mode="json")} for f in fitted
        ])


async def trajectory_fits(session: AsyncSession, tenants: Iterable[str]) -> dict[str, dict[str, FittedTrajectory]]:
    """The stored fits by tenant and instrument (tenants without any get an empty mapping)."""
    wanted = sorted(set(tenants))
    found: dict[str, dict[str, FittedTrajectory]] = {t: {} for t in wanted}
    if wanted:
        rows = await session.execute(select(fits.c.document).where(fits.c.tenant.in_(wanted)))
        for document in rows.scalars():
            fit = read_fit(document)  # a cell fit stored before the mixed model reads as one still
            found[fit.tenant][fit.instrument] = fit
    return found


async def clinical_policies(session: AsyncSession, tenants: Iterable[str] | None = None
                            ) -> dict[str, ClinicalPolicy]:
    """Each tenant's current clinical policy (its highest version), for the tenants named (all when None);
    a tenant without one is absent. One query."""
    latest = select(policies.c.tenant, func.max(policies.c.version).label("version")).group_by(policies.c.tenant)
    if tenants is not None:
        wanted = sorted(set(tenants))
        if not wanted:
            return {}
        latest = latest.where(policies.c.tenant.in_(wanted))
    current = latest.subquery()
    query = select(policies).join(current, (policies.c.tenant == current.c.tenant)
                                  & (policies.c.version == current.c.version))
    return {row.tenant: _policy(row) for row in await session.execute(query)}


async def policy_history(session: AsyncSession, tenant: str) -> list[ClinicalPolicy]:
    rows = await session.execute(select(policies).where(policies.c.tenant == tenant).order_by(policies.c.version))
    return [_policy(row) for row in rows]


async def add_policy(session: AsyncSession, policy: ClinicalPolicy) -> None:
    """Insert a new version; a version someone else wrote meanwhile fails on the primary key (never replaced)."""
    await session.execute(policies.insert().values(
        tenant=policy.tenant, version=policy.version, signed_off_by=policy.signed_off_by,
        signed_off_at=policy.signed_off_at, document=policy.values.model_dump(mode="json")))


def _policy(row: Any) -> ClinicalPolicy:
    return ClinicalPolicy(tenant=row.tenant, version=row.version, signed_off_by=row.signed_off_by,
                          signed_off_at=row.signed_off_at, values=PolicyValues.model_validate(row.document))


class SqlAlertRecord:
    """What the alerts service keeps, in one batch's transaction: episode states, alerts and their
    transitions, the scores it has seen, the tenants' trajectory fits."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def load_episodes(self, keys: Iterable[EpisodeKey]) -> dict[EpisodeKey, tuple[int, dict[str, Any]]]:
        """(version, state document) per episode that has one. Locked on PostgreSQL, in key order."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        key = (episodes.c.tenant, episodes.c.client_id, episodes.c.episode_id)
        query = select(episodes).where(tuple_(*key).in_(wanted))
        if is_postgres(self._session):
            query = query.order_by(*key).with_for_update()
        rows = await self._session.execute(query)
        return {(r.tenant, r.client_id, r.episode_id): (r.version, r.state) for r in rows}

    async def save_episodes(self, states: Mapping[EpisodeKey, tuple[int | None, dict[str, Any], datetime]]) -> None:
        """Insert new episodes and update the others (their rows are locked, see the module docstring)."""
        fresh = [
            {"tenant": t, "client_id": c, "episode_id": e, "latest_at": at, "version": 1, "state": state}
            for (t, c, e), (version, state, at) in states.items() if version is None
        ]
        known = [
            {"k_tenant": t, "k_client": c, "k_episode": e, "latest_at": at, "version": version + 1, "state": state}
            for (t, c, e), (version, state, at) in states.items() if version is not None
        ]
        if fresh:
            await self._session.execute(episodes.insert(), fresh)
        if known:
            await self._session.execute(
                update(episodes)
                .where(episodes.c.tenant == bindparam("k_tenant"), episodes.c.client_id == bindparam("k_client"),
                       episodes.c.episode_id == bindparam("k_episode"))
                .values(latest_at=bindparam("latest_at"), version=bindparam("version"), state=bindparam("state"))
                .execution_options(synchronize_session=False),
                known,
            )

    async def open_alerts(self, keys: Iterable[EpisodeKey]) -> dict[EpisodeKey, list[Alert]]:
        wanted = sorted(set(keys))
        found: dict[EpisodeKey, list[Alert]] = {k: [] for k in wanted}
        if not wanted:
            return found
        rows = await self._session.execute(
            select(alerts.c.tenant, alerts.c.client_id, alerts.c.episode_id, alerts.c.document).where(
                tuple_(alerts.c.tenant, alerts.c.client_id, alerts.c.episode_id).in_(wanted),
                alerts.c.status != "resolved",
            )
        )
        for r in rows:
            found[(r.tenant, r.client_id, r.episode_id)].append(Alert.model_validate(r.document))
        return found

    async def episode_alerts(self, keys: Collection[EpisodeKey]) -> dict[EpisodeKey, list[Alert]]:
        """Every alert of the episodes, open or not, in one query."""
        found: dict[EpisodeKey, list[Alert]] = {key: [] for key in keys}
        if keys:
            rows = await self._session.execute(select(alerts.c.tenant, alerts.c.client_id, alerts.c.episode_id,
                                                alerts.c.document).where(
                tuple_(alerts.c.tenant, alerts.c.client_id, alerts.c.episode_id).in_(sorted(keys))))
            for r in rows:
                found[(r.tenant, r.client_id, r.episode_id)].append(Alert.model_validate(r.document))
        return found

    async def get_alert(self, tenant: str, alert_id: str) -> Alert | None:
        query = select(alerts.c.document).where(alerts.c.alert_id == alert_id, alerts.c.tenant == tenant)
        if is_postgres(self._session):
            query = query.with_for_update()
        document = (await self._session.execute(query)).scalar_one_or_none()
        return Alert.model_validate(document) if document is not None else None

    async def remember_scores(self, scores: Sequence[ScoreComputed]) -> None:
        """Keep the service's own copy of every score (its latest revision), for replays."""
        latest: dict[tuple[str, str], ScoreComputed] = {}
        for score in scores:
            key = (score.tenant, score.submission_id)
            if key not in latest or latest[key].revision <= score.revision:
                latest[key] = score
        if not latest:
            return
        rows = [
            {"tenant": s.tenant, "submission_id": s.submission_id, "client_id": s.client_id,
             "episode_id": s.episode_id, "revision": s.revision, "administered_at": s.administered_at,
             "document": s.model_dump(mode="json")}
            for s in latest.values()
        ]
        newer = upsert(self._session, seen, ["tenant", "submission_id"],
                       only_if=lambda new: seen.c.revision <= new.revision)
        await self._session.execute(newer, rows)

    async def episode_scores(self, keys: Collection[EpisodeKey]) -> dict[EpisodeKey, list[ScoreComputed]]:
        """The service's copy of every score of the episodes, in administration order, in one query."""
        found: dict[EpisodeKey, list[ScoreComputed]] = {key: [] for key in keys}
        if keys:
            rows = await self._session.execute(
                select(seen.c.tenant, seen.c.client_id, seen.c.episode_id, seen.c.document)
                .where(tuple_(seen.c.tenant, seen.c.client_id, seen.c.episode_id).in_(sorted(keys)))
                .order_by(seen.c.administered_at, seen.c.submission_id)
            )
            for r in rows:
                found[(r.tenant, r.client_id, r.episode_id)].append(ScoreComputed.model_validate(r.document))
        return found

    async def record_transitions(self, changes: Sequence[AlertTransition], event_ids: Sequence[str]) -> None:
        """Upsert each alert's latest state and append its transitions (the audit trail)."""
        latest: dict[str, Alert] = {}
        for change in changes:
            latest[change.alert.alert_id] = change.alert
        if latest:
            await self._session.execute(upsert(self._session, alerts, ["alert_id"]),
                                        [_alert_row(a) for a in latest.values()])
        if changes:
            await self._session.execute(transitions.insert(), [
                {"event_id": event_id, "alert_id": c.alert.alert_id, "tenant": c.alert.tenant,
                 "transition": c.transition, "by": c.by, "at": c.at, "reason": c.reason}
                for c, event_id in zip(changes, event_ids, strict=True)
            ])

    async def trajectory_fits(self, tenants: Iterable[str]) -> dict[str, dict[str, FittedTrajectory]]:
        return await trajectory_fits(self._session, tenants)

    async def clinical_policies(self, tenants: Iterable[str]) -> dict[str, ClinicalPolicy]:
        return await clinical_policies(self._session, tenants)

    async def placed_appointments(self, keys: Iterable[AppointmentKey]) -> dict[AppointmentKey, tuple[int, str | None]]:
        """Revision and episode of the appointments already seen (an amended state stays where it was placed
        unless it names another episode)."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        rows = await self._session.execute(
            select(appointments.c.tenant, appointments.c.appointment_id, appointments.c.revision,
                   appointments.c.episode_id)
            .where(tuple_(appointments.c.tenant, appointments.c.appointment_id).in_(wanted)))
        return {(r.tenant, r.appointment_id): (r.revision, r.episode_id) for r in rows}

    async def latest_episodes(self, clients: Iterable[ClientKey]) -> dict[ClientKey, str]:
        """The episode each client was last scored in, for appointments that name none."""
        wanted = sorted(set(clients))
        if not wanted:
            return {}
        rows = await self._session.execute(
            select(episodes.c.tenant, episodes.c.client_id, episodes.c.episode_id, episodes.c.latest_at)
            .where(tuple_(episodes.c.tenant, episodes.c.client_id).in_(wanted), episodes.c.latest_at > NO_SCORE_YET)
            .order_by(episodes.c.latest_at, episodes.c.episode_id))
        return {(r.tenant, r.client_id): r.episode_id for r in rows}  # the latest last, so it wins

    async def remember_appointments(self, placed: Sequence[tuple[Attendance, int, str | None]]) -> None:
        """Keep the latest revision of each appointment state, in the episode it was placed in."""
        latest: dict[AppointmentKey, tuple[Attendance, int, str | None]] = {}
        for attendance, revision, episode in placed:
            key = (attendance.tenant, attendance.appointment_id)
            if key not in latest or latest[key][1] <= revision:
                latest[key] = (attendance, revision, episode)
        if not latest:
            return
        rows = [
            {"tenant": a.tenant, "appointment_id": a.appointment_id, "client_id": a.client_id, "episode_id": episode,
             "revision": revision, "status": a.status, "start": a.start, "document": a.model_dump(mode="json")}
            for a, revision, episode in latest.values()
        ]
        newer = upsert(self._session, appointments, ["tenant", "appointment_id"],
                       only_if=lambda new: appointments.c.revision <= new.revision)
        await self._session.execute(newer, rows)

    async def episode_appointments(self, keys: Collection[EpisodeKey]) -> dict[EpisodeKey, list[Attendance]]:
        """The latest state of every appointment of the episodes, in one query."""
        found: dict[EpisodeKey, list[Attendance]] = {key: [] for key in keys}
        if keys:
            rows = await self._session.execute(
                select(appointments.c.tenant, appointments.c.client_id, appointments.c.episode_id,
                       appointments.c.document)
                .where(tuple_(appointments.c.tenant, appointments.c.client_id, appointments.c.episode_id)
                       .in_(sorted(keys))))
            for r in rows:
                found[(r.tenant, r.client_id, r.episode_id)].append(Attendance.model_validate(r.document))
        return found
