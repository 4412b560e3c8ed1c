"""Keeps the dashboard gauges (open alerts by kind and status, age of the oldest unacknowledged)
current from the alerts table, every few seconds."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import cast

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.alerts.models import StoredAlert
from rapport.shared.metrics import alerts_oldest_unacknowledged, alerts_open, tenant_label
from rapport.shared.periodic import Periodic

alerts = cast(Table, StoredAlert.__table__)


async def refresh(session: AsyncSession, now: datetime) -> None:
    rows = await session.execute(
        select(alerts.c.tenant, alerts.c.kind, alerts.c.status, func.count(), func.min(alerts.c.opened_at))
        .where(alerts.c.status != "resolved")
        .group_by(alerts.c.tenant, alerts.c.kind, alerts.c.status)
    )
    # tenants beyond the label limit share the label _other: their counts add up, the oldest is the oldest
    open_counts: dict[tuple[str, str, str], int] = defaultdict(int)
    oldest_age: dict[tuple[str, str], float] = {}
    for tenant, kind, status, count, oldest in rows:
        label = tenant_label(tenant)
        open_counts[(label, kind, status)] += count
        if status == "open" and oldest is not None:
            opened = oldest if oldest.tzinfo else oldest.replace(tzinfo=now.tzinfo)
            age = (now - opened).total_seconds()
            oldest_age[(label, kind)] = max(age, oldest_age.get((label, kind), age))
    alerts_open.clear()
    alerts_oldest_unacknowledged.clear()
    for (label, kind, status), count in open_counts.items():
        alerts_open.metric.labels(label, kind, status).set(count)
    for (label, kind), age in oldest_age.items():
        alerts_oldest_unacknowledged.metric.labels(label, kind).set(age)


class DashboardGauges:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Callable[[], datetime],
                 interval: float = 15.0) -> None:
        self._sessions = sessions
        self._clock = clock
        self._loop = Periodic("alerts-dashboard-gauges", interval, self.refresh_once)

    async def refresh_once(self) -> None:
        async with self._sessions() as session:
            await refresh(session, self._clock())

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
