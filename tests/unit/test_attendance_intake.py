"""Ingest's attendance handler on in-memory appointment states (issue 15): one answer per appointment
state, amendments replace, an older state arriving late changes nothing, one read per batch, counts
after commit."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fakes import InMemoryAppointments, attendance_unit_of_work

from rapport.services.ingest.handlers import AttendanceIntake
from rapport.shared.messaging.consumer import Inbound
from rapport.shared.metrics import REGISTRY as METRICS

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
INTAKE = AttendanceIntake()


def appointment(tenant: str, message: str, status: str = "booked", last_updated: str = "2026-03-01T09:00:00Z",
                version: str = "1", **changes: Any) -> Inbound:
    resource: dict[str, Any] = {
        "resourceType": "Appointment", "id": "appt-0301-02", "status": status,
        "meta": {"versionId": version, "lastUpdated": last_updated},
        "start": "2026-03-09T10:00:00Z",
        "participant": [{"actor": {"reference": "Patient/client-0301"}},
                        {"actor": {"reference": "Practitioner/clinician-07"}}],
        **changes,
    }
    return Inbound(message_id=message, subject=f"rapport.{tenant}.in.attendance", tenant=tenant,
                   body=json.dumps(resource).encode(), deliveries=1)


def answers(events: list[Any]) -> list[tuple[str, str | None, int | None]]:
    out = []
    for event in events:
        data = json.loads(event.body)["data"]
        out.append((event.subject.rsplit(".", 1)[1], data.get("disposition"), data.get("revision")))
    return out


async def run(appointments: InMemoryAppointments, *batch: Inbound) -> list[tuple[str, str | None, int | None]]:
    uow = attendance_unit_of_work(NOW, appointments)
    await INTAKE(uow, batch)
    return answers(uow.events)


async def test_a_booked_appointment_then_its_no_show_is_stored_once_and_amended_once() -> None:
    tenant, appointments = "attendance-amend", InMemoryAppointments()
    seen = await run(appointments, appointment(tenant, "m-1"))
    seen += await run(appointments, appointment(tenant, "m-2"))  # the same state again
    seen += await run(appointments, appointment(tenant, "m-3", "noshow", "2026-03-09T11:00:00Z", "2"))
    assert seen == [("accepted", "new", 1), ("accepted", "unchanged", 1), ("accepted", "amended", 2)]
    (revision, *_), stored = appointments.stored[(tenant, "appt-0301-02")]
    assert (revision, stored.status) == (2, "no_show")


async def test_an_older_state_arriving_late_is_answered_outdated_and_does_not_overwrite_the_newer() -> None:
    tenant, appointments = "attendance-late", InMemoryAppointments()
    seen = await run(appointments, appointment(tenant, "m-2", "noshow", "2026-03-09T11:00:00Z", "2"))
    seen += await run(appointments, appointment(tenant, "m-1", "booked", "2026-03-01T09:00:00Z", "1"))
    assert seen == [("accepted", "new", 1), ("accepted", "outdated", 1)]
    assert appointments.stored[(tenant, "appt-0301-02")][1].status == "no_show"


async def test_without_last_updated_the_version_orders_the_states() -> None:
    tenant, appointments = "attendance-version", InMemoryAppointments()
    newer = appointment(tenant, "m-2", "noshow", version="7")
    older = appointment(tenant, "m-1", "booked", version="6")
    for message in (newer, older):
        resource = json.loads(message.body)
        resource["meta"].pop("lastUpdated")
        object.__setattr__(message, "body", json.dumps(resource).encode())
    assert await run(appointments, newer, older) == [("accepted", "new", 1), ("accepted", "outdated", 1)]


async def test_one_read_for_a_batch_which_sees_its_own_earlier_states_and_answers_each_part() -> None:
    tenant, appointments = "attendance-batch", InMemoryAppointments()
    bundle = {"resourceType": "Bundle", "type": "history", "entry": [
        {"resource": json.loads(appointment(tenant, "x", "noshow", "2026-03-09T11:00:00Z", "2").body)},
        {"resource": {"resourceType": "Appointment", "status": "waitlist"}},
    ]}
    batch = [appointment(tenant, "m-1"),
             Inbound(message_id="m-2", subject=f"rapport.{tenant}.in.attendance", tenant=tenant,
                     body=json.dumps(bundle).encode(), deliveries=1)]
    uow = attendance_unit_of_work(NOW, appointments)
    await INTAKE(uow, batch)
    assert appointments.loads == 1
    assert answers(uow.events) == [("accepted", "new", 1), ("accepted", "amended", 2), ("rejected", None, None)]
    parts = [(json.loads(e.body)["data"]["inbound_part"], json.loads(e.body)["data"]["inbound_parts"])
             for e in uow.events]
    assert parts == [(1, 1), (1, 2), (2, 2)]
    assert len({e.event_id for e in uow.events}) == 3


async def test_the_same_message_derives_the_same_answer_id_so_a_redelivery_is_one_answer() -> None:
    first = attendance_unit_of_work(NOW, InMemoryAppointments())
    again = attendance_unit_of_work(NOW, InMemoryAppointments())
    await INTAKE(first, [appointment("attendance-ids", "m-1")])
    await INTAKE(again, [appointment("attendance-ids", "m-1")])
    assert [e.event_id for e in first.events] == [e.event_id for e in again.events]


def counted(tenant: str, status: str, outcome: str) -> float:
    return METRICS.get_sample_value("rapport_attendance_total",
                                    {"tenant": tenant, "status": status, "outcome": outcome}) or 0.0


async def test_answers_count_once_the_batch_commits() -> None:
    tenant = "attendance-counts"
    failed = attendance_unit_of_work(NOW, InMemoryAppointments())
    await INTAKE(failed, [appointment(tenant, "m-1")])
    assert counted(tenant, "booked", "new") == 0
    committed = attendance_unit_of_work(NOW, InMemoryAppointments())
    await INTAKE(committed, [appointment(tenant, "m-1"), appointment(tenant, "m-2", status="pending")])
    committed.committed()
    assert (counted(tenant, "booked", "new"), counted(tenant, "unknown", "rejected")) == (1, 1)
