"""The disengagement rule on a clock: a client who stops coming sends no event, so once an hour the
alerts service judges again the episodes whose last attended session is `gap_days` old (the shortest any
tenant's clinical policy sets; each episode is then judged by its tenant's current policy) while sessions
are still expected (an appointment after it: booked, missed or cancelled). The same pure rule as the
attendance handler (rules/attendance.py), through the same unit of work; its events go to the outbox
and the relay publishes them. Idempotent: an episode already alerted for the same gap finds nothing
new, and another replica's pass derives the same alert ids and event ids (episode rows locked on
PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.alerts.handlers import AttendanceAlerting, _notification_event, _transition_event
from rapport.services.alerts.models import SeenAppointment
from rapport.services.alerts.repository import EpisodeKey, clinical_policies
from rapport.services.alerts.rules import Episode, EpisodeState, RuleSet, judge_attendance
from rapport.services.alerts.unit_of_work import AlertsUnitOfWork
from rapport.shared.contracts.alert import AlertTransition
from rapport.shared.db.delivery import Outgoing, add_to_outbox
from rapport.shared.metrics import alert_transitions

SWEEP_SECONDS = 3600.0  # how often the gap rule runs on its own (hourly is well inside a 28-day rule)
SWEEP_BATCH = 500  # episodes judged per pass, the longest-silent first; the next pass takes the rest
appointments = cast(Table, SeenAppointment.__table__)


async def silent_episodes(session: AsyncSession, now: datetime, gap: timedelta, limit: int) -> list[EpisodeKey]:
    """Episodes whose last attended session started at least `gap` before `now` and that have an
    appointment after it (sessions still expected), the longest-silent first."""
    t = appointments
    attended = func.max(case((t.c.status == "attended", t.c.start)))
    latest = func.max(case((t.c.status != "void", t.c.start)))
    query = (
        select(t.c.tenant, t.c.client_id, t.c.episode_id)
        .where(t.c.episode_id.is_not(None))
        .group_by(t.c.tenant, t.c.client_id, t.c.episode_id)
        .having(and_(attended <= now - gap, latest > attended))
        .order_by(attended, t.c.tenant, t.c.client_id, t.c.episode_id)
        .limit(limit)
    )
    return [(r.tenant, r.client_id, r.episode_id) for r in await session.execute(query)]


@dataclass
class AttendanceSweep:
    """`rules`: the attendance handler, whose rules (under each tenant's clinical policy) the sweep judges by."""

    rules: AttendanceAlerting
    sessions: async_sessionmaker[AsyncSession]
    outbox: Table
    clock: Callable[[], datetime]

    async def once(self) -> list[AlertTransition]:
        now = self.clock()
        async with self.sessions() as session, session.begin():
            policies = await clinical_policies(session)  # every tenant's current one: one read per pass
            under = {tenant: self.rules.policies.under(policy) for tenant, policy in policies.items()}
            gap = timedelta(days=min(r.disengagement.parameters.gap_days.value
                                     for r in [self.rules.rules, *under.values()]))
            keys = await silent_episodes(session, now, gap, SWEEP_BATCH)
            if not keys:
                return []
            uow = AlertsUnitOfWork.on(session, now)
            changes, events = await judge_silent(uow, keys, lambda tenant: under.get(tenant, self.rules.rules))
            await add_to_outbox(session, self.outbox, events, now, timedelta(0))
        for change in changes:
            alert_transitions.labels(change.alert.tenant, change.alert.kind, change.transition).inc()
        return changes


async def judge_silent(uow: AlertsUnitOfWork, keys: list[EpisodeKey],
                       rules_for: Callable[[str], RuleSet]) -> tuple[list[AlertTransition], list[Outgoing]]:
    record, now = uow.record, uow.now
    stored = await record.load_episodes(keys)
    open_alerts = await record.open_alerts(keys)
    appointments_of = await record.episode_appointments(keys)
    changes: list[AlertTransition] = []
    events: list[Outgoing] = []
    saved: dict[EpisodeKey, tuple[int | None, dict[str, Any], datetime]] = {}
    for key in sorted(keys):
        version, document = stored.get(key, (None, None))
        state = EpisodeState.model_validate(document) if document is not None else None
        verdict = judge_attendance(state, appointments_of[key], open_alerts[key], episode=Episode(*key),
                                   rules=rules_for(key[0]), now=now)
        saved[key] = (version, verdict.state.model_dump(mode="json"), verdict.state.latest_at)
        changes += verdict.transitions
        for change in verdict.transitions:
            events.append(_transition_event(change, "attendance-sweep"))
            if (notification := _notification_event(change, events[-1])) is not None:
                events.append(notification)
    await record.save_episodes(saved)
    await record.record_transitions(changes, [e.event_id for e in events if e.subject.split(".")[2] == "alert"])
    return changes, events
