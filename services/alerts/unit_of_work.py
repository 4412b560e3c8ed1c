"""The alerts service's unit of work: the episodes, alerts, seen scores and seen appointments a batch
reads and writes, and the tenants' clinical policies it reads, in its transaction."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from rapport.services.alerts.repository import AppointmentKey, ClientKey, EpisodeKey, SqlAlertRecord
from rapport.services.alerts.rules.policy import ClinicalPolicy
from rapport.services.alerts.rules.trajectory import FittedTrajectory
from rapport.shared.contracts.alert import Alert, AlertTransition
from rapport.shared.contracts.attendance import Attendance
from rapport.shared.contracts.score import ScoreComputed
from rapport.shared.unit_of_work import UnitOfWork


class AlertRecord(Protocol):
    """What the alerts service keeps (SqlAlertRecord; an in-memory one in the handler tests)."""

    async def load_episodes(self, keys: Iterable[EpisodeKey]) -> dict[EpisodeKey, tuple[int, dict[str, Any]]]: ...

    async def save_episodes(self, states: Mapping[EpisodeKey, tuple[int | None, dict[str, Any], datetime]]) -> None:
        ...

    async def open_alerts(self, keys: Iterable[EpisodeKey]) -> dict[EpisodeKey, list[Alert]]: ...

    async def episode_alerts(self, keys: Collection[EpisodeKey]) -> dict[EpisodeKey, list[Alert]]: ...

    async def get_alert(self, tenant: str, alert_id: str) -> Alert | None: ...

    async def remember_scores(self, scores: Sequence[ScoreComputed]) -> None: ...

    async def episode_scores(self, keys: Collection[EpisodeKey]) -> dict[EpisodeKey, list[ScoreComputed]]: ...

    async def record_transitions(self, changes: Sequence[AlertTransition], event_ids: Sequence[str]) -> None: ...

    async def trajectory_fits(self, tenants: Iterable[str]) -> dict[str, dict[str, FittedTrajectory]]: ...

    async def clinical_policies(self, tenants: Iterable[str]) -> dict[str, ClinicalPolicy]:
        """Each tenant's current clinical policy; a tenant without one is absent."""
        ...

    async def placed_appointments(self, keys: Iterable[AppointmentKey]) -> dict[AppointmentKey, tuple[int, str | None]]:
        ...

    async def latest_episodes(self, clients: Iterable[ClientKey]) -> dict[ClientKey, str]: ...

    async def remember_appointments(self, placed: Sequence[tuple[Attendance, int, str | None]]) -> None: ...

    async def episode_appointments(self, keys: Collection[EpisodeKey]) -> dict[EpisodeKey, list[Attendance]]: ...


class AlertsUnitOfWork(UnitOfWork):
    def __init__(self, record: AlertRecord, now: datetime) -> None:
        super().__init__(now)
        self.record = record

    @classmethod
    def on(cls, session: AsyncSession, now: datetime) -> AlertsUnitOfWork:
        """The consumer's factory: the batch's session behind the record."""
        return cls(SqlAlertRecord(session), now)
