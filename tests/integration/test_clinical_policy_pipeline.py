"""Each tenant's clinical policy end to end, over the real NATS JetStream on SQLite and on PostgreSQL:
ingest, scoring and alerts running as in production, two clinics (tenant ids at 64 characters) sending the
same client's GAD-7s, one of them with a policy of its own set by `rapport policy set` and changed between
two sessions."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from harness import running, settings_for, watching
from sqlalchemy import select
from typer.testing import CliRunner

from rapport.cli import app
from rapport.journeys import Journey, Journeys
from rapport.policy import PolicyValues, set_policy
from rapport.services.alerts.models import StoredAlert
from rapport.shared.db.engine import create_engine, session_factory

pytestmark = pytest.mark.nats
SERVICES = ["ingest", "scoring", "alerts"]
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
# Robin (a synthetic client): GAD-7 12 at intake, settling at 9 (three points better, less than the reliable
# change of 4), between the NHS Talking Therapies caseness 8 and the developers' 10
ROBIN = [12, 11, 10, 9, 9, 9]


def tenant_id(name: str) -> str:
    return (f"{name}-{uuid.uuid4().hex}" + "x" * 64)[:64]


def gad7(session: int, total: int) -> bytes:
    items = [min(3, max(0, total - 3 * n)) for n in range(7)]
    return json.dumps({
        "submission_id": f"robin-gad7-{session}", "instrument": "gad7", "client_id": "client-robin",
        "episode_id": "client-robin-ep1", "clinician_id": "clinician-07",
        "administered_at": (T0 + timedelta(days=7 * (session - 1))).isoformat(),
        "responses": {str(n + 1): v for n, v in enumerate(items)},
    }).encode()


async def answered(journeys: Journeys, body: bytes) -> Journey:
    journey = await journeys.submit(body)
    await asyncio.wait_for(journey.done.wait(), 30)
    return journey


async def stored_alerts(database_url: str, tenant: str) -> list[tuple[int | None, dict[str, Any]]]:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            rows = await session.execute(select(StoredAlert.policy_version, StoredAlert.document)
                                         .where(StoredAlert.tenant == tenant))
            return [(row.policy_version, row.document) for row in rows]
    finally:
        await engine.dispose()


US_CLINIC = PolicyValues.model_validate({"note": "the developers' cutoff",
                                         "instruments": {"gad7": {"not_on_track": {"caseness": 10}}}})


async def test_the_same_sessions_alert_under_each_clinics_own_policy_and_a_new_policy_applies_to_the_next_one(
    database_url: str, fresh_stream: str,
) -> None:
    nhs, us = tenant_id("nhs"), tenant_id("us")
    assert len(nhs) == len(us) == 64
    first = await set_policy(database_url, us, US_CLINIC, "Dr Ada Lead (synthetic)", T0)
    assert first.version == 1
    async with running(SERVICES, settings_for(database_url), fresh_stream), \
            watching(fresh_stream, nhs) as at_nhs, watching(fresh_stream, us) as at_us:
        for session, total in enumerate(ROBIN, start=1):
            nhs_journey = await answered(at_nhs, gad7(session, total))
            us_journey = await answered(at_us, gad7(session, total))
        # session 6: still a case at 8 (the NHS service, no policy of its own: the sourced default), not at 10
        [raised] = [e["data"] for e in nhs_journey.alerts]
        assert (raised["transition"], raised["alert"]["kind"]) == ("raised", "not_on_track")
        assert raised["alert"]["policy_version"] == 0
        assert raised["alert"]["evidence"][0]["values"]["caseness_cutoff"] == 8
        assert us_journey.alerts == [] and us_journey.evaluations["robin-gad7-6"]["transitions"] == []
        # the NHS service now signs off a policy of its own (caseness 10): the alert raised before keeps v0
        second = await set_policy(database_url, nhs, US_CLINIC, "Dr Priya Lead (synthetic)", T0 + timedelta(days=40))
        assert second.version == 1
        [(version, document)] = await stored_alerts(database_url, nhs)
        assert (version, document["policy_version"], document["status"]) == (0, 0, "open")
        # session 7 runs under it: Robin's 9 is out of the clinical range, the alert resolves saying so
        later = await answered(at_nhs, gad7(7, 9))
        [resolved] = [e["data"] for e in later.alerts]
        assert (resolved["transition"], resolved["alert"]["resolution"]) == ("resolved", "back_on_track")
        assert resolved["alert"]["policy_version"] == 1 and resolved["alert"]["alert_id"] == raised["alert"]["alert_id"]
        [(version, document)] = await stored_alerts(database_url, nhs)
        assert (version, document["status"]) == (1, "resolved")
        assert document["evidence"][0]["policy_version"] == 0, "the evidence that raised it still says v0 and 8"
        assert document["evidence"][0]["values"]["caseness_cutoff"] == 8


async def test_policy_set_show_and_validate_as_a_clinical_lead_uses_them(database_url: str, tmp_path: Path) -> None:
    tenant = tenant_id("cli")

    def rapport(*args: str) -> Any:
        return CliRunner().invoke(app, ["policy", *args], env={"RAPPORT_DATABASE_URL": database_url})

    good = tmp_path / "us.toml"
    good.write_text('note = "US clinic"\n[instruments.gad7.not_on_track]\ncaseness = 10\n'
                    '[rules.disengagement]\nlate_cancellation_hours = 48\n')
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"instruments": {"gad7": {"not_on_track": {"caseness": 22}},
                                               "k10": {"reliable_deterioration": {"enabled": True}}}}))
    checked = await asyncio.to_thread(rapport, "validate", "--file", str(good))
    assert checked.exit_code == 0 and "a valid clinical policy" in checked.output
    refused = await asyncio.to_thread(rapport, "validate", "--file", str(bad))
    assert refused.exit_code == 1
    assert "instruments.gad7.not_on_track.caseness: 22 is outside the allowed range: a number from 0 to 21" \
        in refused.output
    assert "instruments.k10.reliable_deterioration: reliable_deterioration cannot run on k10" in refused.output
    refused_set = await asyncio.to_thread(rapport, "set", "--tenant", tenant, "--file", str(bad),
                                          "--signed-off-by", "Dr Ada Lead")
    assert refused_set.exit_code == 1 and "caseness: 22 is outside" in refused_set.output
    unsigned = await asyncio.to_thread(rapport, "set", "--tenant", tenant, "--file", str(good))
    assert unsigned.exit_code != 0, "a policy nobody signed off is not set"
    shown = json.loads((await asyncio.to_thread(rapport, "show", "--tenant", tenant, "--json")).stdout)
    assert shown["version"] == 0 and {v["origin"] for v in shown["values"]} == {"default"}
    for expected in (1, 2):
        done = await asyncio.to_thread(rapport, "set", "--tenant", tenant, "--file", str(good),
                                       "--signed-off-by", "Dr Ada Lead (synthetic)")
        assert done.exit_code == 0 and f"clinical policy version {expected}" in done.output
    shown = json.loads((await asyncio.to_thread(rapport, "show", "--tenant", tenant, "--json")).stdout)
    assert (shown["version"], shown["signed_off_by"], shown["note"]) == (2, "Dr Ada Lead (synthetic)", "US clinic")
    values = {(v["rule"], v["instrument"], v["field"]): v for v in shown["values"]}
    assert values[("not_on_track", "gad7", "caseness")]["value"] == 10
    assert values[("not_on_track", "gad7", "caseness")]["origin"] == "tenant"
    assert values[("disengagement", None, "late_cancellation_hours")]["origin"] == "tenant"
    assert values[("not_on_track", "phq9", "caseness")]["origin"] == "default"
    text = (await asyncio.to_thread(rapport, "show", "--tenant", tenant)).output
    assert "version 2, signed off by Dr Ada Lead (synthetic)" in text and "tenant's own (v2)" in text
