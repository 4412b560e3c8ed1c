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

from rapport.services.alerts.models import SeenAppointment
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
    async with running(["ingest", "alerts"], settings_for(database_url), fresh_stream) as services, \
            listening(fresh_stream, tenant) as (events, js):
        await js.publish(subjects.attendance_in(tenant), native, headers={"Nats-Msg-Id": longest("msg", 512)})
        await events.until(lambda: len(events.answers()) >= 1)
        [answer] = events.answers()
        assert answer["type"] == "rapport.attendance.accepted.v1", answer["data"]
        assert answer["data"]["attendance"]["appointment_id"] == appointment_id
        [row] = await stored_appointments(services["ingest"])
        assert (row.tenant, row.appointment_id, row.document["clinician_id"]) == (tenant, appointment_id, clinician)
        await events.until(lambda: bool(events.of("attendance.recorded")))
        [recorded] = events.of("attendance.recorded")
        assert (recorded["data"]["episode_id"], recorded["data"]["summary"]["cancelled"]) == (episode, 1)
        async with services["alerts"].sessions() as session:
            [seen] = (await session.execute(select(SeenAppointment))).scalars()
        assert (seen.tenant, seen.appointment_id, seen.client_id, seen.episode_id) == \
            (tenant, appointment_id, client, episode)


class Clinic:
    """A clinic's system publishing one client's sessions (every four days, ending four days ago) and
    their SRS, each step followed to its last event: evaluation.completed or attendance.recorded."""

    def __init__(self, tenant: str, events: Events, js: Any, client: str) -> None:
        self.tenant, self.events, self.js, self.client = tenant, events, js, client
        self.base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=20)

    def start(self, session: int) -> datetime:
        return self.base + timedelta(days=4 * (session - 1))

    async def srs(self, session: int, total: float) -> None:
        quarter = round(total / 4, 1)
        sid = f"{self.client}-srs-{session}"
        body = json.dumps({
            "submission_id": sid, "instrument": "srs", "client_id": self.client,
            "episode_id": f"{self.client}-ep1", "clinician_id": "clinician-07", "session": session,
            "administered_at": (self.start(session) + timedelta(minutes=50)).isoformat(),
            "responses": {"1": quarter, "2": quarter, "3": quarter, "4": round(total - 3 * quarter, 1)},
        }).encode()
        await self.js.publish(subjects.submissions_in(self.tenant), body, headers={"Nats-Msg-Id": sid})
        await self.events.until(lambda: any(e["data"]["submission_id"] == sid
                                            for e in self.events.of("evaluation.completed")))

    async def session(self, session: int, status: str, **extra: Any) -> dict[str, Any]:
        appointment_id = f"{self.client}-appt-{session}"
        start = self.start(session)
        body = json.dumps({
            "appointment_id": appointment_id, "client_id": self.client, "episode_id": f"{self.client}-ep1",
            "clinician_id": "clinician-07", "status": status, "start": start.isoformat(),
            "recorded_at": (min(start + timedelta(hours=1), datetime.now(UTC)) if status != "cancelled"
                            else extra["cancelled_at"]),
            **extra,
        }, default=str).encode()
        await self.js.publish(subjects.attendance_in(self.tenant), body, headers={"Nats-Msg-Id": appointment_id})

        def recorded() -> list[dict[str, Any]]:
            return [e["data"] for e in self.events.of("attendance.recorded")
                    if e["data"]["appointment_id"] == appointment_id]

        await self.events.until(lambda: bool(recorded()))
        return recorded()[-1]

    def alerts(self) -> list[dict[str, Any]]:
        return [e["data"]["alert"] for e in self.received("alert.")]

    def received(self, prefix: str) -> list[dict[str, Any]]:
        return [e for e in self.events.received if e.get("type", "").startswith(f"rapport.{prefix}")]


SERVICES = ["ingest", "scoring", "alerts"]


async def test_a_client_whose_srs_falls_and_who_then_misses_two_sessions_has_one_escalated_rupture_alert(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    settings = settings_for(database_url, licensed_instruments=f"{tenant}:srs")
    async with running(SERVICES, settings, fresh_stream), listening(fresh_stream, tenant) as (events, js):
        aroha = Clinic(tenant, events, js, "client-aroha")
        for session, total in ((1, 38), (2, 38.5), (3, 31)):
            await aroha.session(session, "attended")
            await aroha.srs(session, total)
        [raised] = aroha.alerts()
        assert raised["kind"] == "alliance_rupture"
        fourth = await aroha.session(4, "no_show")
        fifth = await aroha.session(5, "no_show")
        assert fourth["alert_ids"] == fifth["alert_ids"] == [raised["alert_id"]]
        assert (fifth["summary"]["missed_in_a_row"], fifth["summary"]["attended"]) == (2, 3)
        assert {a["alert_id"] for a in aroha.alerts()} == {raised["alert_id"]}  # one alert for one situation
        last = aroha.alerts()[-1]
        assert (last["kind"], last["escalated"], last["severity"], last["status"]) == \
            ("alliance_rupture", True, "high", "open")
        assert last["evidence"][-1]["rule_id"] == "disengagement"
        assert last["evidence"][-1]["values"]["missed"] == ["client-aroha-appt-4", "client-aroha-appt-5"]
        # raised, escalated by the first missed session, updated by the second: each tells the therapist
        await events.until(lambda: len(aroha.received("notify.")) >= 3)
        assert [(n["data"]["kind"], n["data"]["transition"]) for n in aroha.received("notify.")] == [
            ("alliance_rupture", "raised"), ("alliance_rupture", "escalated"), ("alliance_rupture", "updated")]


async def test_a_client_who_cancels_late_for_a_documented_reason_with_a_good_alliance_is_not_flagged(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    settings = settings_for(database_url, licensed_instruments=f"{tenant}:srs")
    async with running(SERVICES, settings, fresh_stream), listening(fresh_stream, tenant) as (events, js):
        cara = Clinic(tenant, events, js, "client-cara")
        for session, total in ((1, 38), (2, 39), (3, 38.5)):
            await cara.session(session, "attended")
            await cara.srs(session, total)
        cancelled = await cara.session(4, "cancelled", cancelled_at=(cara.start(4) - timedelta(hours=14)).isoformat(),
                                       cancelled_by="client", reason="pat-lt")
        assert (cancelled["summary"]["late_cancellations"], cancelled["alert_ids"]) == (1, [])
        back = await cara.session(5, "attended")
        assert (back["summary"]["attended"], back["summary"]["missed_in_a_row"]) == (4, 0)
        assert cara.alerts() == []


async def test_a_client_who_stops_coming_is_found_by_the_hourly_sweep_without_any_new_event(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    from rapport.services.alerts.handlers import AttendanceAlerting
    from rapport.services.alerts.models import outbox
    from rapport.services.alerts.rules import load_ruleset
    from rapport.services.alerts.sweep import AttendanceSweep

    async with running(SERVICES, settings_for(database_url), fresh_stream) as services, \
            listening(fresh_stream, tenant) as (events, js):
        milo = Clinic(tenant, events, js, "client-milo")
        milo.base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=20)
        attended = await milo.session(1, "attended")
        booked = await milo.session(9, "booked")  # 12 days from now: sessions are expected
        assert attended["alert_ids"] == booked["alert_ids"] == []
        alerts = services["alerts"]
        later = datetime.now(UTC) + timedelta(days=9)  # 29 days after the last attended session
        rules = AttendanceAlerting(load_ruleset())
        sweep = AttendanceSweep(rules, alerts.sessions, outbox, lambda: later)
        [raised] = await sweep.once()
        assert (raised.transition, raised.alert.kind) == ("raised", "disengagement")
        assert raised.alert.evidence[0].values["findings"] == ["gap"]
        assert await sweep.once() == []  # the same gap again: nothing new, another replica's pass alike
        await alerts.relay.relay_once(ahead=timedelta(days=10))  # the rows are due at the sweep's time
        await events.until(lambda: bool(milo.alerts()))
        assert [a["alert_id"] for a in milo.alerts()] == [raised.alert.alert_id]
        # the sweep at the real time (the service's own pass at start included) finds nothing yet
        assert await AttendanceSweep(rules, alerts.sessions, outbox, lambda: datetime.now(UTC)).once() == []


async def test_with_two_replicas_of_each_service_the_story_still_has_one_alert(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    settings = settings_for(database_url, licensed_instruments=f"{tenant}:srs")
    async with running([*SERVICES, *SERVICES], settings, fresh_stream) as services, \
            listening(fresh_stream, tenant) as (events, js):
        assert len(services) == 6
        aroha = Clinic(tenant, events, js, "client-aroha")
        for session, total in ((1, 38), (2, 38.5), (3, 31)):
            await aroha.session(session, "attended")
            await aroha.srs(session, total)
        await aroha.session(4, "no_show")
        fifth = await aroha.session(5, "no_show")
        assert len({a["alert_id"] for a in aroha.alerts()}) == 1
        assert fifth["summary"]["missed_in_a_row"] == 2
        assert aroha.alerts()[-1]["evidence"][-1]["values"]["missed"] == ["client-aroha-appt-4", "client-aroha-appt-5"]
        assert len(events.of("attendance.recorded")) == 5  # one per accepted state, whichever replica took it


async def test_an_episode_that_ends_as_planned_is_told_apart_and_no_longer_followed(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    from rapport.services.alerts.handlers import AttendanceAlerting
    from rapport.services.alerts.models import outbox
    from rapport.services.alerts.rules import load_ruleset
    from rapport.services.alerts.sweep import AttendanceSweep

    async with running(["ingest", "alerts"], settings_for(database_url), fresh_stream) as services, \
            listening(fresh_stream, tenant) as (events, js):
        pia = Clinic(tenant, events, js, "client-pia")
        for session in (1, 2, 3):
            await pia.session(session, "attended")
        await pia.session(9, "booked")  # a follow-up booked, then the ending agreed instead
        ended_at = (pia.start(3) + timedelta(hours=1)).isoformat()
        ending = json.dumps({"client_id": "client-pia", "episode_id": "client-pia-ep1", "ending": "planned",
                             "ended_at": ended_at, "recorded_at": ended_at}).encode()
        for message_id in ("ending-1", "ending-1-again"):  # sent twice: stored once, answered twice
            await js.publish(subjects.attendance_in(tenant), ending, headers={"Nats-Msg-Id": message_id})
        await events.until(lambda: len([e for e in events.of("attendance.recorded")
                                        if e["data"]["status"] == "ending"]) >= 2)
        first, again = [a["data"] for a in events.answers()][-2:]
        assert (first["disposition"], again["disposition"]) == ("new", "unchanged")
        assert first["ending"]["ending"] == "planned" and first["attendance"] is None
        recorded = next(e["data"] for e in events.of("attendance.recorded") if e["data"]["status"] == "ending")
        assert (recorded["episode_id"], recorded["summary"]["ending"], recorded["summary"]["ending_recorded"]) == \
            ("client-pia-ep1", "planned", True)
        later = datetime.now(UTC) + timedelta(days=30)
        sweep = AttendanceSweep(AttendanceAlerting(load_ruleset()), services["alerts"].sessions, outbox, lambda: later)
        assert await sweep.once() == []  # 50 days without attendance, a booking ahead: but the episode ended
        assert pia.alerts() == []
