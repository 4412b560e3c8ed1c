"""A dashboard that loses its event stream gets back what it missed: the gateway under uvicorn on the
real NATS JetStream (the embedded nats-server), alert events published to the RAPPORT stream as the
alerts service publishes them. Each event's id is its place in the stream; reconnecting with
`Last-Event-ID` first gives the events stored since, still only the caller's tenant's and, for a
clinician, their own clients', then the live ones, none twice. An id the stream cannot resume from
(purged, past its end, not an id, more than the bound) is answered with `event: reset` saying why.
Synthetic people only."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from harness import serving
from lead_cohort import transitions
from test_gateway import gateway_settings, token

import rapport.services.gateway.live as live
from rapport.shared.messaging import subjects
from rapport.shared.messaging.publish import cloud_event

pytestmark = pytest.mark.nats

T0 = datetime.now(UTC) - timedelta(hours=2)



@dataclass(frozen=True)
class Seen:
    id: str | None
    kind: str
    data: dict[str, Any]


@asynccontextmanager
async def events(base: str, bearer: str, last_event_id: str | None = None) -> AsyncIterator[asyncio.Queue[Seen]]:
    """The caller's Server-Sent Events, parsed, once the stream is open at the gateway."""
    received: asyncio.Queue[Seen] = asyncio.Queue()
    opened = asyncio.Event()
    headers = {"Authorization": f"Bearer {bearer}", **({"Last-Event-ID": last_event_id} if last_event_id else {})}

    async def read() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=None) as http, \
                http.stream("GET", "/api/v1/events", headers=headers) as response:
            assert response.status_code == 200
            event_id, kind = None, ""
            async for line in response.aiter_lines():
                if line == ": connected":
                    opened.set()
                elif line.startswith("id: "):
                    event_id = line.removeprefix("id: ")
                elif line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    await received.put(Seen(event_id, kind, json.loads(line.removeprefix("data: "))))
                    event_id, kind = None, ""

    task = asyncio.create_task(read())
    try:
        await asyncio.wait_for(opened.wait(), 10)
        yield received
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def next_seen(queue: asyncio.Queue[Seen]) -> Seen:
    return await asyncio.wait_for(queue.get(), 10)


class Alerts:
    """Publishes alert transitions to the RAPPORT stream as the alerts service does."""

    def __init__(self, client: nats.NATS) -> None:
        self.js = client.jetstream()

    async def publish(self, tenant: str, alert_id: str, clinician: str, step: int = 0) -> int:
        moved = transitions(tenant, alert_id, "alliance_rupture", clinician, f"client-{alert_id}", T0,
                            acknowledged_after=timedelta(minutes=30), resolution="repaired")[step]
        verb = {"raised": "raised", "resolved": "resolved"}.get(moved.transition, "updated")
        event = cloud_event(entity="alert", verb=verb, service="alerts", tenant=tenant,
                            subject=subjects.outbound(tenant, "alert", verb), about=alert_id, data=moved)
        ack = await self.js.publish(event.subject, event.body, headers={"Nats-Msg-Id": event.event_id},
                                    stream=subjects.EVENT_STREAM, timeout=10)
        return int(ack.seq)


@asynccontextmanager
async def alerts(nats_url: str) -> AsyncIterator[Alerts]:
    client = await nats.connect(nats_url)
    try:
        yield Alerts(client)
    finally:
        await client.close()


async def test_a_lead_who_reconnects_gets_what_was_missed_once_and_only_their_tenants(
    sqlite_databases: Any, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    settings = gateway_settings(await sqlite_databases.sqlite(), key_file)
    lead = token(key_file, tenant, "lead")
    async with serving(settings, fresh_stream) as base, alerts(fresh_stream) as publisher:
        async with events(base, lead) as first:
            sequence = await publisher.publish(tenant, "a-1", "clin-a")
            seen = await next_seen(first)
        assert (seen.kind, seen.data["alert_id"], seen.id) == ("alert.raised", "a-1", str(sequence))

        # while the dashboard is away: a-1 acknowledged, b-1 raised for another clinician, and
        # another tenant's alert for a clinician with the same id
        await publisher.publish(tenant, "a-1", "clin-a", step=1)
        await publisher.publish(tenant, "b-1", "clin-b")
        await publisher.publish(f"{tenant}x", "x-1", "clin-a")

        async with events(base, lead, last_event_id=seen.id) as again:
            missed = [await next_seen(again), await next_seen(again)]
            assert [(m.kind, m.data["alert_id"], m.data["status"]) for m in missed] == [
                ("alert.updated", "a-1", "acknowledged"), ("alert.raised", "b-1", "open")]
            assert [int(m.id or 0) for m in missed] == sorted(int(m.id or 0) for m in missed)
            assert all(int(m.id or 0) > sequence for m in missed)
            later = await publisher.publish(tenant, "b-1", "clin-b", step=1)
            live_one = await next_seen(again)
            assert (live_one.id, live_one.data["alert_id"], live_one.data["status"]) == (
                str(later), "b-1", "acknowledged")
            assert again.empty()  # nothing twice

        # a clinician resuming from the same id gets only their own client's; the other tenant's
        # lead only theirs
        async with events(base, token(key_file, tenant, "clinician", clinician="clin-a"),
                          last_event_id=seen.id) as own:
            mine = await next_seen(own)
            assert (mine.data["alert_id"], mine.data["status"]) == ("a-1", "acknowledged")
            await publisher.publish(tenant, "a-1", "clin-a", step=2)  # a live one of theirs: it follows
            resolved = await next_seen(own)
            assert (resolved.kind, resolved.data["alert_id"]) == ("alert.resolved", "a-1")
        async with events(base, token(key_file, f"{tenant}x", "lead"), last_event_id=seen.id) as theirs:
            other = await next_seen(theirs)
            assert other.data["alert_id"] == "x-1"
            marker = await publisher.publish(f"{tenant}x", "x-1", "clin-a", step=1)
            assert (await next_seen(theirs)).id == str(marker)  # no event of the first tenant came between

        # who may watch at all is unchanged by the header
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            refused = await http.get("/api/v1/events", headers={"Authorization": f"Bearer {token(key_file, tenant)}",
                                                                "Last-Event-ID": seen.id or ""})
            nobody = await http.get("/api/v1/events", headers={"Last-Event-ID": seen.id or ""})
        assert (refused.status_code, nobody.status_code) == (403, 401)


async def test_an_id_the_stream_cannot_resume_from_is_answered_with_a_reset_and_live_events_follow(
    sqlite_databases: Any, fresh_stream: str, tenant: str, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = gateway_settings(await sqlite_databases.sqlite(), key_file)
    lead = token(key_file, tenant, "lead")
    async with serving(settings, fresh_stream) as base, alerts(fresh_stream) as publisher:
        first = await publisher.publish(tenant, "a-1", "clin-a")
        for asked, reason in (("not-a-number", "unknown"), ("99999999", "unknown")):
            async with events(base, lead, last_event_id=asked) as stream:
                reset = await next_seen(stream)
                assert (reset.kind, reset.data["reason"]) == ("reset", reason), asked
                sequence = await publisher.publish(tenant, "c-1", "clin-c")
                followed = await next_seen(stream)
                assert (followed.kind, followed.id) == ("alert.raised", str(sequence))

        # more missed than the bound: told so rather than given part of it
        monkeypatch.setattr(live, "RESUME_LIMIT", 1)
        async with events(base, lead, last_event_id=str(first)) as stream:  # two since
            assert (await next_seen(stream)).data["reason"] == "too_old"
        async with events(base, lead, last_event_id=str(first + 1)) as stream:  # one since: within the bound
            within = await next_seen(stream)
            assert (within.id, within.data["alert_id"]) == (str(first + 2), "c-1")

        # the broker no longer holds the events after the id (purged, as retention would)
        client = await nats.connect(fresh_stream)
        try:
            await client.jetstream().purge_stream(subjects.EVENT_STREAM, seq=first + 2)
        finally:
            await client.close()
        async with events(base, lead, last_event_id=str(first)) as stream:
            reset = await next_seen(stream)
            assert (reset.kind, reset.data["reason"]) == ("reset", "too_old")
            assert "GET /api/v1/alerts" in reset.data["message"]
