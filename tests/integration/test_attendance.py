"""Attendance over the real NATS JetStream, on SQLite and PostgreSQL (issue 15): appointments and encounters
answered exactly once, amended and late states, ids at their maximum lengths, and the clinic's stories
through ingest, scoring and alerts."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pytest
from harness import running, settings_for
from nats.aio.msg import Msg
from sqlalchemy import select

from rapport.services.ingest.models import StoredAttendance
from rapport.shared.messaging import subjects
from rapport.shared.service import ServiceRuntime

pytestmark = pytest.mark.nats
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


class Events:
    """A tenant's outbound events as they arrive, waited on by condition (no sleeps)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.changed = asyncio.Condition()

    async def on_message(self, msg: Msg) -> None:
        event = json.loads(msg.data)
        event["nats_subject"] = msg.subject
        async with self.changed:
            self.received.append(event)
            self.changed.notify_all()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e.get("type") == f"rapport.{kind}.v1"]

    def answers(self) -> list[dict[str, Any]]:
        return [e for e in self.received if e.get("type") in ("rapport.attendance.accepted.v1",
                                                             "rapport.attendance.rejected.v1")]

    async def until(self, check: Any, seconds: float = 30) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(check), seconds)


@asynccontextmanager
async def listening(nats_url: str, tenant: str) -> AsyncIterator[tuple[Events, Any]]:
    client = await nats.connect(nats_url)
    events = Events()
    await client.subscribe(f"rapport.{tenant}.>", cb=events.on_message)
    await client.flush()
    try:
        yield events, client.jetstream()
    finally:
        await client.close()


def appointment(appointment_id: str, status: str, *, day: int, version: int, client: str = "client-0401",
                episode: str = "episode-0401-1", clinician: str = "clinician-07", **extra: Any) -> bytes:
    start = T0 + timedelta(days=day)
    updated = start + timedelta(hours=1) if status != "booked" else T0 - timedelta(days=7) + timedelta(minutes=version)
    return json.dumps({
        "resourceType": "Appointment", "id": appointment_id, "status": status,
        "meta": {"versionId": str(version), "lastUpdated": updated.isoformat()},
        "start": start.isoformat(), "end": (start + timedelta(minutes=50)).isoformat(),
        "basedOn": [{"reference": f"EpisodeOfCare/{episode}"}],
        "participant": [{"actor": {"reference": f"Patient/{client}"}, "status": "accepted"},
                        {"actor": {"reference": f"Practitioner/{clinician}"}, "status": "accepted"}],
        **extra,
    }).encode()


async def stored_appointments(runtime: ServiceRuntime) -> list[StoredAttendance]:
    async with runtime.sessions() as session:
        return list((await session.execute(select(StoredAttendance))).scalars())


async def test_appointment_states_are_answered_once_each_and_the_latest_stands(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    inbound = subjects.attendance_in(tenant)
    async with running(["ingest"], settings_for(database_url), fresh_stream) as services, \
            listening(fresh_stream, tenant) as (events, js):
        booked = appointment("appt-0401-01", "booked", day=0, version=1)
        await js.publish(inbound, booked, headers={"Nats-Msg-Id": "ehr-1"})
        # the same message again, past the stream's duplicate window: the inbox recognises it
        await js.publish(inbound, booked, headers={"Nats-Msg-Id": "ehr-1-again", "Rapport-Message-Id": "ehr-1"})
        await js.publish(inbound, appointment("appt-0401-01", "noshow", day=0, version=2),
                         headers={"Nats-Msg-Id": "ehr-2"})
        await js.publish(inbound, appointment("appt-0401-01", "booked", day=0, version=1, comment="late copy"),
                         headers={"Nats-Msg-Id": "ehr-3"})  # v1 again, with other content, arriving late
        await js.publish(inbound, b'{"resourceType": "Appointment", "status": "waitlist"}',
                         headers={"Nats-Msg-Id": "ehr-4"})
        await events.until(lambda: len(events.answers()) >= 4)
        answers = [(a["nats_subject"].rsplit(".", 1)[1], a["data"].get("disposition"), a["data"].get("revision"))
                   for a in events.answers()]
        assert answers == [("accepted", "new", 1), ("accepted", "amended", 2), ("accepted", "outdated", 2),
                           ("rejected", None, None)]
        assert [a["data"]["inbound_message_id"] for a in events.answers()] == ["ehr-1", "ehr-2", "ehr-3", "ehr-4"]
        rejection = events.answers()[-1]["data"]
        assert [(p["code"], p["field"]) for p in rejection["problems"]] == [
            ("missing_field", "id"), ("status_not_recorded", "status"), ("missing_field", "participant")]
        [row] = await stored_appointments(services["ingest"])
        assert (row.appointment_id, row.revision, row.document["status"], row.version) == \
            ("appt-0401-01", 2, "no_show", 2)


def longest(prefix: str, length: int = 128, *, token: bool = False) -> str:
    core = f"{prefix}-{uuid.uuid4().hex}" + ("_-" if token else ".:/_-")
    return (core + "x" * length)[:length]


async def test_ids_at_their_maximum_lengths_are_stored_and_answered(database_url: str, fresh_stream: str) -> None:
    tenant = ("t" + uuid.uuid4().hex + "-" * 64)[:64]
    appointment_id, client, episode = longest("appt"), longest("client"), longest("episode")
    clinician = longest("clinician", token=True)
    native = json.dumps({
        "appointment_id": appointment_id, "client_id": client, "episode_id": episode, "clinician_id": clinician,
        "status": "cancelled", "start": T0.isoformat(), "recorded_at": (T0 - timedelta(hours=2)).isoformat(),
        "cancelled_at": (T0 - timedelta(hours=2)).isoformat(), "cancelled_by": "client", "reason": "x" * 64,
    }).encode()
    async with running(["ingest"], settings_for(database_url), fresh_stream) as services, \
            listening(fresh_stream, tenant) as (events, js):
        await js.publish(subjects.attendance_in(tenant), native, headers={"Nats-Msg-Id": longest("msg", 512)})
        await events.until(lambda: len(events.answers()) >= 1)
        [answer] = events.answers()
        assert answer["type"] == "rapport.attendance.accepted.v1", answer["data"]
        assert answer["data"]["attendance"]["appointment_id"] == appointment_id
        [row] = await stored_appointments(services["ingest"])
        assert (row.tenant, row.appointment_id, row.document["clinician_id"]) == (tenant, appointment_id, clinician)
