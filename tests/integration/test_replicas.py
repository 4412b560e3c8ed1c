"""Replicas consuming one durable consumer do what one does: two alerts replicas give exactly the
alerts one gives (episodes are locked while evaluated, late scores replay the episode); two scoring
replicas keep each series and each gap-rule episode whole; two ingest replicas never give two
corrections one revision."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from harness import running, settings_for, watching
from sqlalchemy import select

from rapport.cohort import build_cohort
from rapport.services.alerts.models import StoredAlert
from rapport.services.ingest.models import StoredSubmission
from rapport.services.scoring.models import Series, StoredScore
from rapport.shared.service import ServiceRuntime

pytestmark = [pytest.mark.nats, pytest.mark.postgres]
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


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


def _phq9(client: int, day: int, total: int, *, named: bool) -> bytes:
    items = [min(3, max(0, total - 3 * n)) for n in range(8)] + [0]
    return json.dumps({
        "submission_id": f"c{client:03d}-d{day:03d}", "instrument": "phq9", "client_id": f"client-{client:04d}",
        "clinician_id": "clinician-01", "administered_at": (T0 + timedelta(days=day)).isoformat(),
        "responses": {str(n + 1): v for n, v in enumerate(items)},
        **({"episode_id": f"episode-{client:04d}"} if named else {}),
    }).encode()


async def _scoring_record(runtime: ServiceRuntime) -> tuple[list[dict[str, Any]], list[Any]]:
    async with runtime.sessions() as session:
        documents = list((await session.execute(select(StoredScore.__table__.c.document))).scalars())
        summaries = list((await session.execute(select(Series.__table__))).all())
    return documents, summaries


async def test_two_scoring_replicas_keep_each_series_and_each_gap_rule_episode_whole(
    postgres_databases: Any, fresh_stream: str, tenant: str
) -> None:
    """Weekly PHQ-9s, five sessions, then a return after 120 days for three more, through two scoring
    replicas at once, two submissions a batch, client by client, so one client's consecutive sessions
    are placed by both replicas at the same time. Twelve clients send no episode id: each gets exactly
    two episodes holding the right sessions. Six name their episode: it holds all eight. Every
    series summary counts all its sessions, from the first to the last. (An episode is named after
    the session that opened it.)"""
    settings = settings_for(await postgres_databases.postgres(), batch_size=2)
    days = [0, 7, 14, 21, 28, 148, 155, 162]
    totals = [20, 19, 18, 17, 16, 15, 14, 13]
    bodies = [_phq9(c, d, t, named=c >= 12) for c in range(18) for d, t in zip(days, totals, strict=True)]
    async with running(["ingest", "scoring", "scoring", "alerts"], settings, fresh_stream) as runtimes, \
            watching(fresh_stream, tenant) as watch:
        sent = [await watch.submit(b) for b in bodies]
        await asyncio.wait_for(asyncio.gather(*(j.done.wait() for j in sent)), 120)
        documents, summaries = await _scoring_record(runtimes["scoring"])
    assert len(documents) == len(bodies)
    for client in {d["client_id"] for d in documents if d["episode_by"] == "gap_rule"}:
        runs: dict[str, set[int]] = {}  # episode -> the days placed in it; named after whichever session opened it
        for d in documents:
            if d["client_id"] == client:
                runs.setdefault(d["episode_id"], set()).add((datetime.fromisoformat(d["administered_at"]) - T0).days)
        assert sorted(sorted(days) for days in runs.values()) == [[0, 7, 14, 21, 28], [148, 155, 162]], client
    assert sorted((r.sessions, r.baseline_total, r.latest_total) for r in summaries) == sorted(
        [(5, 20.0, 16.0)] * 12 + [(3, 15.0, 13.0)] * 12 + [(8, 20.0, 13.0)] * 6)


async def test_two_ingest_replicas_give_each_correction_of_one_submission_its_own_revision(
    postgres_databases: Any, fresh_stream: str, tenant: str
) -> None:
    """Ten different contents for one submission id, one a batch, through two ingest replicas at once:
    the answers carry revisions 1 to 10, each once, and the stored submission is at revision 10."""
    settings = settings_for(await postgres_databases.postgres(), batch_size=1)
    bodies = [_phq9(1, 0, total, named=True) for total in range(10, 20)]
    async with running(["ingest", "ingest"], settings, fresh_stream) as runtimes, \
            watching(fresh_stream, tenant) as watch:
        sent = [await watch.submit(b) for b in bodies]
        await watch.wait_until(lambda: all(j.answers for j in sent))
        async with runtimes["ingest"].sessions() as session:
            stored = (await session.execute(select(StoredSubmission.__table__.c.revision))).scalars().all()
    revisions = sorted(j.answers[0]["revision"] for j in sent)
    assert revisions == list(range(1, 11)) and stored == [10]
