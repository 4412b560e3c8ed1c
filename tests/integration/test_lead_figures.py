"""The clinical lead's figures on SQLite and PostgreSQL, from a read model written by the projection's
own functions (lead_cohort.py): exact counts, median and 90th percentile of known acknowledgement
times, the not-on-track share, ruptures raised against repaired, the NHS Talking Therapies figures
on the episodes that ended in the period (scoring's outcomes, counted only for a finished course) and
dropout by clinician; the alerts behind each figure; and over
HTTP, `GET /api/v1/figures` for a lead of this tenant only (another tenant's lead sees theirs, a
clinician, an admin and an integration 403, no credential 401), each read in the audit trail."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from dashboard_rig import bearer, dashboard_app, signing_key
from lead_cohort import EXPECTED_NOVEMBER, SINCE, UNTIL, seed
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.gateway.lead_figures import Behind, FigureFilters, alerts_behind, figures

NOVEMBER = FigureFilters(since=date(2026, 11, 1), until=date(2026, 11, 30))


def summary(shown: dict[str, Any]) -> dict[str, Any]:
    """The figures' numbers in the shape of EXPECTED_NOVEMBER."""
    o, t, n, r, tt = (shown[k] for k in ("open_alerts", "time_to_acknowledge", "not_on_track", "ruptures",
                                         "talking_therapies"))
    return {
        "open_alerts": {"total": o["total"], "unacknowledged": o["unacknowledged"],
                        "by_kind": {row["kind"]: row["count"] for row in o["by_kind"]},
                        "by_clinician": {row["clinician"]: row["count"] for row in o["by_clinician"]}},
        "time_to_acknowledge": {row["clinician"]: (row["acknowledged"], row["waiting"], row["median_seconds"],
                                                   row["p90_seconds"]) for row in [*t["by_clinician"], t["all"]]},
        "not_on_track": (n["active_episodes"], n["not_on_track"], n["share"]),
        "ruptures": (r["raised"], r["repaired"], r["unrepaired"], r["not_resolved"]),
        "talking_therapies": {k: tt[k] for k in EXPECTED_NOVEMBER["talking_therapies"]},
        "endings_by_clinician": {row["clinician"]: (row["ended"], row["unplanned"], row["fewer_than_two_contacts"],
                                                    row["finished"], row["recovered"]) for row in tt["by_clinician"]},
    }


async def test_the_figures_of_november_come_to_the_numbers_worked_out_by_hand(
    sessions: async_sessionmaker[AsyncSession], tenant: str
) -> None:
    await seed(sessions, tenant, f"{tenant}x")
    async with sessions() as session:
        found = await figures(session, tenant, NOVEMBER)
    shown = found.as_json()
    assert summary(shown) == EXPECTED_NOVEMBER
    assert shown["talking_therapies"]["closed_episodes_known"] is True
    assert "ended in the period" in shown["talking_therapies"]["basis"]
    assert any(source.startswith("R54") for source in shown["talking_therapies"]["sources"])
    assert shown["open_alerts"]["page"] == f"/lead/alerts?since={SINCE}&until={UNTIL}&figure=open"


async def test_one_clinicians_figures_and_all_time(sessions: async_sessionmaker[AsyncSession], tenant: str) -> None:
    await seed(sessions, tenant, f"{tenant}x")
    async with sessions() as session:
        theirs = summary((await figures(session, tenant, FigureFilters("clin-a", NOVEMBER.since,
                                                                       NOVEMBER.until))).as_json())
        ever = summary((await figures(session, tenant, FigureFilters())).as_json())
    assert theirs["open_alerts"] == {"total": 2, "unacknowledged": 0, "by_clinician": {"clin-a": 2},
                                     "by_kind": {"not_on_track": 1, "reliable_deterioration": 1}}
    assert theirs["time_to_acknowledge"] == {"clin-a": (4, 0, 9000.0, 13320.0), "all": (4, 0, 9000.0, 13320.0)}
    assert theirs["not_on_track"] == (2, 1, 0.5)  # c1 and c2 scored by clin-a; c1 not on track
    assert theirs["ruptures"] == (2, 1, 1, 0)
    assert (theirs["talking_therapies"]["ended"], theirs["talking_therapies"]["finished"]) == (2, 1)
    assert theirs["endings_by_clinician"] == {"clin-a": (2, 1, 0, 1, 1)}
    # all time: October's open not-on-track alert is open too; c3 and c7 (October) are active; c5's
    # December ending counts, a finished course recovered; c6 is still open
    assert (ever["open_alerts"]["total"], ever["not_on_track"]) == (5, (7, 2, 0.2857))
    tt = ever["talking_therapies"]
    assert (tt["ended"], tt["finished"], tt["case_at_start"], tt["recovered"]) == (5, 3, 2, 2)


async def test_the_alerts_behind_each_figure(sessions: async_sessionmaker[AsyncSession], tenant: str) -> None:
    await seed(sessions, tenant, f"{tenant}x")

    async def behind(figure: Any, **narrowed: Any) -> list[str]:
        async with sessions() as session:
            return [r.alert_id for r in await alerts_behind(session, tenant, NOVEMBER, Behind(figure, **narrowed))]
    assert await behind("open") == ["b2", "a1", "a4", "b1"]  # most urgent first: the risk item, then by age
    assert await behind("open", kind="alliance_rupture") == ["b1"]
    assert sorted(await behind("open", clinician="clin-a")) == ["a1", "a4"]
    assert sorted(await behind("acknowledgement", clinician="clin-b")) == ["b1", "b2"]
    assert sorted(await behind("not_on_track")) == ["a1", "b3"]
    assert sorted(await behind("ruptures")) == ["a2", "a3", "b1"]
    assert await behind("ruptures_repaired") == ["a2"]


async def test_another_tenant_sees_only_its_own(sessions: async_sessionmaker[AsyncSession], tenant: str) -> None:
    await seed(sessions, tenant, f"{tenant}x")
    async with sessions() as session:
        other = (await figures(session, f"{tenant}x", NOVEMBER)).as_json()
        nobody = (await figures(session, f"{tenant}y", NOVEMBER)).as_json()
    assert other["open_alerts"]["total"] == 1 and other["ruptures"]["raised"] == 1
    assert other["not_on_track"]["active_episodes"] == 1
    assert (other["talking_therapies"]["ended"], other["talking_therapies"]["unpaired"]) == (1, 1)
    assert nobody["open_alerts"]["total"] == 0 and nobody["not_on_track"]["share"] is None
    assert nobody["time_to_acknowledge"]["all"]["median_seconds"] is None


@pytest_asyncio.fixture
async def gateway(sessions: async_sessionmaker[AsyncSession], tmp_path: Path,
                  database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    key = signing_key(tmp_path)
    app = dashboard_app(sessions, key, database_url)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        yield http, key


async def test_the_figures_api_answers_a_lead_for_their_tenant_only_and_audits_each_read(
    sessions: async_sessionmaker[AsyncSession], gateway: tuple[httpx.AsyncClient, Path], tenant: str
) -> None:
    http, key = gateway
    other = f"{tenant}x"
    await seed(sessions, tenant, other)
    november = {"since": SINCE, "until": UNTIL}

    def auth(who: str, role: str, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {bearer(key, who, role, **claims)}"}
    mine = await http.get("/api/v1/figures", params=november, headers=auth(tenant, "lead"))
    assert mine.status_code == 200, mine.text
    assert mine.json()["tenant"] == tenant and summary(mine.json()) == EXPECTED_NOVEMBER
    theirs = await http.get("/api/v1/figures", params=november, headers=auth(other, "lead"))
    assert theirs.json()["tenant"] == other and theirs.json()["open_alerts"]["total"] == 1
    # the tenant is the token's: a parameter naming another is not a filter the API has
    asked = await http.get("/api/v1/figures", params={**november, "tenant": tenant}, headers=auth(other, "lead"))
    assert asked.json()["tenant"] == other and asked.json()["open_alerts"]["total"] == 1

    behind = await http.get(mine.json()["ruptures"]["repaired_alerts"]["alerts"], headers=auth(tenant, "lead"))
    assert [a["alert_id"] for a in behind.json()] == ["a2"] and behind.json()[0]["resolution"] == "repaired"
    foreign = await http.get(mine.json()["ruptures"]["repaired_alerts"]["alerts"], headers=auth(other, "lead"))
    assert foreign.json() == []

    for role, claims in (("clinician", {"clinician": "clin-a"}), ("admin", {}), ("integration", {})):
        for path in ("/api/v1/figures", "/api/v1/figures/alerts?figure=open", "/lead", "/lead/alerts?figure=open"):
            refused = await http.get(path, headers=auth(tenant, role, **claims))
            assert refused.status_code == 403, (role, path)
    assert (await http.get("/api/v1/figures")).status_code == 401
    for path in ("/admin", "/admin/webhooks", "/admin/instruments"):  # and a lead is not an admin
        assert (await http.get(path, headers=auth(tenant, "lead"))).status_code == 403, path
    for wrong in ({"since": "November"}, {"since": UNTIL, "until": SINCE}, {"clinician": "a.b"}):
        bad = await http.get("/api/v1/figures", params=wrong, headers=auth(tenant, "lead"))
        assert bad.status_code == 400, wrong
    assert (await http.get("/api/v1/figures/alerts", params={"figure": "x"},
                           headers=auth(tenant, "lead"))).status_code == 400

    rows = (await http.get("/api/v1/audit", params={"action": "read_figures"},
                           headers=auth(tenant, "admin"))).json()["entries"]
    assert [(r["outcome"], r["role"], r["resource"], r["detail"]) for r in rows if r["outcome"] == 200] == [
        (200, "lead", "figures/alerts", "figure ruptures_repaired filters since,until"),
        (200, "lead", "figures", "filters since,until")]
    assert sorted({r["role"] for r in rows if r["outcome"] == 403}) == ["admin", "clinician", "integration"]
    refused_lead = (await http.get("/api/v1/audit", params={"action": "manage_webhooks"},
                                   headers=auth(tenant, "admin"))).json()["entries"]
    assert [(r["role"], r["outcome"]) for r in refused_lead] == [("lead", 403)]


@pytest.mark.parametrize("seconds, expected", [
    ([3600.0], (3600.0, 3600.0)),
    ([3600.0 * h for h in range(1, 11)], (19800.0, 32760.0)),  # 1..10 h: median 5.5 h, p90 9.1 h
])
def test_percentiles_interpolate_between_the_ordered_times(seconds: list[float],
                                                           expected: tuple[float, float]) -> None:
    from rapport.services.gateway.lead_figures import percentiles

    assert percentiles(list(reversed(seconds))) == expected
    assert percentiles([]) == (None, None)
