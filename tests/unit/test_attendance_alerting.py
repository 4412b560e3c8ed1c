"""The alerts service's attendance handler on an in-memory record (issue 15): appointments placed in their
episode, the rupture escalated by missed sessions and announced once, every accepted state recorded once,
an older revision never overwriting a newer one, one read per table per batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fakes import InMemoryAlertRecord, alerts_unit_of_work
from test_alerts_handler import ALERTING, srs

from rapport.services.alerts.handlers import AttendanceAlerting
from rapport.services.alerts.rules import load_ruleset
from rapport.shared.contracts.attendance import Attendance, AttendanceAccepted
from rapport.shared.messaging.consumer import Inbound
from rapport.shared.messaging.publish import cloud_event

T0 = datetime(2026, 2, 2, 9, tzinfo=UTC)  # the SRS helper's first week
NOW = datetime(2026, 6, 1, tzinfo=UTC)
ATTENDANCE = AttendanceAlerting(load_ruleset())


def accepted(tenant: str, session: int, status: str, *, revision: int = 1, episode: str | None = "ep-1",
             disposition: str = "new", message: str | None = None, **changes: Any) -> Inbound:
    """Dana's appointment for session `session` (the week of her SRS), as ingest accepted it."""
    attendance = Attendance(tenant=tenant, appointment_id=f"appt-{session}", client_id="client-dana",
                            episode_id=episode, clinician_id="clin-07", status=status,  # type: ignore[arg-type]
                            start=T0 + timedelta(days=7 * session) - timedelta(hours=1), **changes)
    data = AttendanceAccepted(attendance=attendance, revision=revision, disposition=disposition,  # type: ignore[arg-type]
                              inbound_message_id=message or f"ehr-{session}-{revision}")
    event = cloud_event(entity="attendance", verb="accepted", service="ingest", tenant=tenant,
                        subject=f"rapport.{tenant}.attendance.accepted", about=attendance.appointment_id, data=data)
    return Inbound(message or f"a-{session}-{revision}", event.subject, tenant, event.body, 1)


def kinds(events: list[Any]) -> list[str]:
    return [e.subject.split(".", 2)[2] for e in events]


async def test_missed_sessions_after_a_rupture_escalate_it_and_each_state_is_recorded_once() -> None:
    tenant, record = "attendance-escalate", InMemoryAlertRecord()
    scores = alerts_unit_of_work(NOW, record)
    await ALERTING(scores, [srs(tenant, 1, 38.0), srs(tenant, 2, 38.5), srs(tenant, 3, 31.0)])
    [rupture] = record.alerts.values()
    uow = alerts_unit_of_work(T0 + timedelta(days=36), record)
    await ATTENDANCE(uow, [accepted(tenant, 4, "no_show"), accepted(tenant, 5, "no_show")])
    # one read of the tenants' clinical policies per batch (the scores' and the attendance's), one of each table
    assert record.reads == ["policies", "placed", "latest_episodes", "policies", "appointments"]
    assert kinds(uow.events).count("attendance.recorded") == 2
    assert kinds(uow.events).count("alert.updated") == 1 and "notify.clin-07" in kinds(uow.events)
    [after] = record.alerts.values()
    assert (after.alert_id, after.escalated, after.severity) == (rupture.alert_id, True, "high")
    assert after.evidence[-1].values["missed"] == ["appt-4", "appt-5"]
    again = alerts_unit_of_work(T0 + timedelta(days=36), record)
    await ATTENDANCE(again, [accepted(tenant, 5, "no_show", message="a-5-1")])  # a redelivery, say
    assert kinds(again.events) == ["attendance.recorded"]


async def test_an_appointment_naming_no_episode_joins_the_clients_latest_scored_episode() -> None:
    tenant, record = "attendance-placed", InMemoryAlertRecord()
    await ALERTING(alerts_unit_of_work(NOW, record), [srs(tenant, 1, 38.0)])
    uow = alerts_unit_of_work(NOW, record)
    await ATTENDANCE(uow, [accepted(tenant, 1, "attended", episode=None)])
    assert record.appointments[(tenant, "appt-1")][2] == "ep-1"
    [recorded] = [e for e in uow.events if e.subject.endswith("attendance.recorded")]
    assert b'"episode_id":"ep-1"' in recorded.body and b'"attended":1' in recorded.body


async def test_an_older_revision_arriving_late_does_not_overwrite_the_newer_state() -> None:
    tenant, record = "attendance-order", InMemoryAlertRecord()
    await ATTENDANCE(alerts_unit_of_work(NOW, record), [accepted(tenant, 2, "no_show", revision=2)])
    await ATTENDANCE(alerts_unit_of_work(NOW, record), [accepted(tenant, 2, "booked", revision=1)])
    assert record.appointments[(tenant, "appt-2")][0].status == "no_show"


async def test_an_unchanged_or_outdated_state_changes_nothing_and_is_still_recorded() -> None:
    tenant, record = "attendance-unchanged", InMemoryAlertRecord()
    uow = alerts_unit_of_work(NOW, record)
    await ATTENDANCE(uow, [accepted(tenant, 2, "booked", disposition="outdated")])
    assert kinds(uow.events) == ["attendance.recorded"] and not record.appointments


async def test_an_event_naming_another_tenant_is_poison() -> None:
    event = accepted("attendance-a", 1, "attended")
    forged = Inbound(event.message_id, "rapport.attendance-b.attendance.accepted", "attendance-b", event.body, 1)
    try:
        await ATTENDANCE(alerts_unit_of_work(NOW, InMemoryAlertRecord()), [forged])
    except Exception as error:
        assert "tenant_mismatch" in str(error)
    else:
        raise AssertionError("another tenant's attendance was taken")


async def test_an_accepted_ending_is_kept_in_the_episode_and_recorded() -> None:
    from rapport.shared.contracts.attendance import EpisodeEnding

    tenant, record = "attendance-ending", InMemoryAlertRecord()
    await ATTENDANCE(alerts_unit_of_work(NOW, record), [accepted(tenant, 1, "attended")])
    ending = EpisodeEnding(tenant=tenant, client_id="client-dana", episode_id="ep-1", ending="planned",
                           ended_at=T0 + timedelta(days=8), recorded_at=T0 + timedelta(days=8))
    data = AttendanceAccepted(ending=ending, revision=1, disposition="new", inbound_message_id="ehr-end")
    event = cloud_event(entity="attendance", verb="accepted", service="ingest", tenant=tenant,
                        subject=f"rapport.{tenant}.attendance.accepted", about="ending", data=data)
    uow = alerts_unit_of_work(NOW, record)
    await ATTENDANCE(uow, [Inbound("a-end", event.subject, tenant, event.body, 1)])
    [recorded] = uow.events
    body = recorded.body.decode()
    assert '"status":"ending"' in body and '"ending":"planned"' in body and '"ending_recorded":true' in body
    [(_version, state)] = record.episodes.values()
    assert state["attendance"]["ending"] == "planned"
