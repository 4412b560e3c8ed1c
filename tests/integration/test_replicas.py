"""Two replicas of the alerts service consuming one durable consumer give exactly the alerts that
one replica gives: episodes are locked while evaluated, late scores replay the episode."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from harness import running, settings_for, watching
from sqlalchemy import select

from rapport.cohort import build_cohort
from services.alerts.models import StoredAlert
from shared.service import ServiceRuntime

pytestmark = [pytest.mark.nats, pytest.mark.postgres]


async def _final_alerts(runtime: ServiceRuntime) -> set[tuple[Any, ...]]:
    table = StoredAlert.__table__
    async with runtime.sessions() as session:
        rows = await session.execute(select(table.c.document))
    return {
        (d["client_id"], d["kind"], d["instrument"], d["subscale"], d["status"], d["resolution"], d["escalated"])
        for d in rows.scalars()
    }


async def _run(database_url: str, nats_url: str, tenant: str, alert_replicas: int) -> set[tuple[Any, ...]]:
    settings = settings_for(database_url, licensed_instruments=f"{tenant}:srs", batch_size=25)
    cohort = build_cohort(tenant, clients=12, sessions=10, seed=11)
    names = ["ingest", "scoring", *["alerts"] * alert_replicas]
    async with running(names, settings, nats_url) as runtimes, watching(nats_url, tenant) as watch:
        sent = [await watch.submit(a.body) for a in cohort.administrations]
        await asyncio.wait_for(asyncio.gather(*(j.done.wait() for j in sent)), 120)
        return await _final_alerts(runtimes["alerts"])


async def test_two_alert_replicas_raise_exactly_what_one_replica_raises(
    postgres_databases: Any, fresh_stream: str, tenant: str
) -> None:
    one = await _run(await postgres_databases.postgres(), fresh_stream, tenant, alert_replicas=1)
    two = await _run(await postgres_databases.postgres(), fresh_stream, tenant + "x", alert_replicas=2)
    assert one, "the cohort raises alerts"
    assert two == one
