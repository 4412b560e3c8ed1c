"""The alert and record API over real HTTP, with ingest, scoring and alerts running on the real NATS
JetStream, on SQLite and PostgreSQL: a falling SRS raises a rupture that the therapist sees live
(Server-Sent Events) and in the list, acknowledges (200, then 409 with why) and resolves; the record
shows the scores with their change figures and the alert on them. Every route is tried with another
clinician's, another tenant's and another role's token, and without one. Synthetic clients only."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import running, until, watching
from test_gateway import client, gateway_settings, serving, token

pytestmark = pytest.mark.nats

SERVICES = ["ingest", "scoring", "alerts"]
T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
CLIENT, EPISODE, CLINICIAN = "client-0002", "client-0002-ep1", "clinician-02"


def srs(sid: str, total: float, *, day: int) -> bytes:
    quarter = round(total / 4, 1)
    items = [quarter, quarter, quarter, round(total - 3 * quarter, 1)]
    return json.dumps({
        "submission_id": sid, "instrument": "srs", "client_id": CLIENT, "episode_id": EPISODE,
        "clinician_id": CLINICIAN, "administered_at": (T0 + timedelta(days=day)).isoformat(),
        "responses": {str(n + 1): v for n, v in enumerate(items)},
    }).encode()


@asynccontextmanager
async def events(base: str, bearer: str) -> AsyncIterator[asyncio.Queue[tuple[str, dict[str, Any]]]]:
    """The caller's Server-Sent Events, parsed, once the stream is open at the gateway."""
    received: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    opened = asyncio.Event()

    async def read() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=None) as http, http.stream(
                "GET", "/api/v1/events", headers={"Authorization": f"Bearer {bearer}"}) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            kind = ""
            async for line in response.aiter_lines():
                if line == ": connected":
                    opened.set()
                elif line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    await received.put((kind, json.loads(line.removeprefix("data: "))))

    task = asyncio.create_task(read())
    try:
        await asyncio.wait_for(opened.wait(), 10)
        yield received
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_rupture_is_seen_live_listed_acknowledged_once_resolved_and_shown_on_the_record(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    settings = gateway_settings(database_url, key_file, licensed_instruments=f"{tenant}:srs")
    own = token(key_file, tenant, "clinician", clinician=CLINICIAN)
    async with running(SERVICES, settings, fresh_stream), serving(settings, fresh_stream) as base, \
            watching(fresh_stream, tenant) as watch, client(base, own) as http, events(base, own) as live:
        for sid, total, day in (("srs-0001", 38.0, 0), ("srs-0002", 31.0, 7)):
            journey = await watch.submit(srs(sid, total, day=day))
            await asyncio.wait_for(journey.done.wait(), 30)
            assert journey.answers[0]["kind"] == "rapport.submission.accepted.v1", journey.answers[0].get("problems")

        kind, raised = await asyncio.wait_for(live.get(), 10)
        assert kind == "alert.raised" and raised["kind"] == "alliance_rupture" and raised["status"] == "open"
        assert "SRS" in raised["headline"] and raised["repair_prompt"], "the words the notification carries"
        alert_id = raised["alert_id"]

        async def listed() -> list[dict[str, Any]]:
            return list((await http.get("/api/v1/alerts", params={"status": "open"})).json()["alerts"])
        [shown] = await until(listed)
        assert (shown["alert_id"], shown["clinician_id"], shown["headline"]) == (alert_id, CLINICIAN,
                                                                                raised["headline"])
        detail = (await http.get(f"/api/v1/alerts/{alert_id}")).json()
        assert [t["transition"] for t in detail["transitions"]] == ["raised"]
        assert detail["evidence"][0]["rule_id"] and detail["evidence"][0]["submission_id"] == "srs-0002"

        acknowledged = await http.post(f"/api/v1/alerts/{alert_id}/acknowledge")
        assert acknowledged.status_code == 200, acknowledged.text
        assert acknowledged.json()["status"] == "acknowledged"
        kind, updated = await asyncio.wait_for(live.get(), 10)
        assert (kind, updated["status"]) == ("alert.updated", "acknowledged")
        again = await http.post(f"/api/v1/alerts/{alert_id}/acknowledge")
        assert again.status_code == 409
        assert again.json()["problems"][0]["message"] == "the alert is already acknowledged"

        no_reason = await http.post(f"/api/v1/alerts/{alert_id}/resolve", json={})
        assert no_reason.status_code == 422 and no_reason.json()["problems"][0]["field"] == "reason"
        resolved = await http.post(f"/api/v1/alerts/{alert_id}/resolve", json={"reason": "talked it through"})
        assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
        assert resolved.json()["resolved_reason"] == "talked it through"

        async def history() -> list[str]:
            found = (await http.get(f"/api/v1/alerts/{alert_id}")).json()["transitions"]
            moved = [t["transition"] for t in found]
            return moved if moved == ["raised", "acknowledged", "resolved"] else []
        assert await until(history) == ["raised", "acknowledged", "resolved"]
        assert (await http.get(f"/api/v1/alerts/{alert_id}")).json()["transitions"][1]["by"] == CLINICIAN

        [episode] = (await http.get(f"/api/v1/clients/{CLIENT}/episodes")).json()
        assert (episode["episode_id"], episode["scores"], episode["instruments"]) == (EPISODE, 2, ["srs"])
        record = (await http.get(f"/api/v1/clients/{CLIENT}/episodes/{EPISODE}/scores")).json()
        assert [s["total"] for s in record["scores"]] == [38.0, 31.0]
        assert record["scores"][0]["change"] is None and record["scores"][1]["change"] is not None
        assert "responses" not in json.dumps(record), "the record keeps totals, never the answers"
        assert [a["alert_id"] for a in record["alerts"]] == [alert_id]

        async with client(base, token(key_file, tenant, "admin")) as admin:
            trail = (await admin.get("/api/v1/audit", params={"limit": 200})).json()["entries"]
        done = [(e["action"], e["resource"], e["outcome"]) for e in reversed(trail) if e["role"] == "clinician"]
        for row in [("read_alerts", f"alert/{alert_id}", 200), ("acknowledge_alert", f"alert/{alert_id}", 200),
                    ("acknowledge_alert", f"alert/{alert_id}", 409), ("resolve_alert", f"alert/{alert_id}", 200),
                    ("read_records", f"client/{CLIENT}", 200),
                    ("read_records", f"client/{CLIENT}/episode/{EPISODE}", 200), ("watch_events", "events", 200)]:
            assert row in done, row
        assert all(e["clinician"] == CLINICIAN for e in trail if e["role"] == "clinician")
        assert "talked it through" not in json.dumps(trail), "the audit trail keeps ids, never what was written"


async def test_every_route_answers_another_clinician_another_tenant_and_another_role_as_if_nothing_were_there(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    settings = gateway_settings(database_url, key_file, licensed_instruments=f"{tenant}:srs")
    tokens = {
        "own": token(key_file, tenant, "clinician", clinician=CLINICIAN),
        "lead": token(key_file, tenant, "lead"),
        "other clinician": token(key_file, tenant, "clinician", clinician="clinician-99"),
        "other tenant's lead": token(key_file, f"{tenant}-x", "lead"),
        "integration": token(key_file, tenant, "integration"),
        "admin": token(key_file, tenant, "admin"),
    }
    async with running(SERVICES, settings, fresh_stream), serving(settings, fresh_stream) as base, \
            watching(fresh_stream, tenant) as watch, events(base, tokens["lead"]) as live:
        for sid, total, day in (("srs-0001", 38.0, 0), ("srs-0002", 31.0, 7)):
            await asyncio.wait_for((await watch.submit(srs(sid, total, day=day))).done.wait(), 30)
        _kind, raised = await asyncio.wait_for(live.get(), 10)
        alert_id = raised["alert_id"]
        reads = [f"/api/v1/alerts/{alert_id}", f"/api/v1/clients/{CLIENT}/episodes",
                 f"/api/v1/clients/{CLIENT}/episodes/{EPISODE}/scores"]
        commands = [f"/api/v1/alerts/{alert_id}/acknowledge", f"/api/v1/alerts/{alert_id}/resolve"]

        async def answers(who: str | None) -> dict[str, int]:
            async with client(base, tokens[who] if who else None) as http:
                found = {path: (await http.get(path)).status_code for path in reads}
                found |= {path: (await http.post(path, json={"reason": "r"})).status_code for path in commands}
                found["/api/v1/alerts"] = (await http.get("/api/v1/alerts")).status_code
                if who in (None, "integration", "admin"):  # refused before a stream opens
                    found["/api/v1/events"] = (await http.get("/api/v1/events", timeout=5)).status_code
                return found

        async with client(base, tokens["own"]) as own:
            assert (await until(lambda: _count(own))) == 1
        for who in ("other clinician", "other tenant's lead"):
            found = await answers(who)
            assert {path: found[path] for path in reads + commands} == dict.fromkeys(reads + commands, 404), who
            async with client(base, tokens[who]) as http:
                assert (await http.get("/api/v1/alerts")).json()["total"] == 0, who
        for who, status in (("integration", 403), ("admin", 403), (None, 401)):
            assert set((await answers(who)).values()) == {status}, who
        async with client(base, tokens["lead"]) as lead:
            assert (await lead.get(f"/api/v1/alerts/{alert_id}")).status_code == 200
        async with client(base, tokens["admin"]) as admin:
            trail = (await admin.get("/api/v1/audit", params={"limit": 200})).json()["entries"]
        refused = {(e["clinician"], e["action"], e["outcome"]) for e in trail if e["resource"] == f"alert/{alert_id}"}
        assert ("clinician-99", "read_alerts", 404) in refused and ("clinician-99", "resolve_alert", 404) in refused
        assert {e["outcome"] for e in trail if e["role"] == "integration"} == {403}, "refusals are audited too"
        async with client(base, tokens["own"]) as own:
            detail = (await own.get(f"/api/v1/alerts/{alert_id}")).json()
            assert detail["status"] == "open", "none of the refused commands reached the alert"


async def _count(http: httpx.AsyncClient) -> int:
    return int((await http.get("/api/v1/alerts")).json()["total"])
