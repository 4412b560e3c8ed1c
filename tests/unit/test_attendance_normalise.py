"""Appointments and encounters as clinic systems send them (issue 15): the FHIR R4 spec's own examples, the
shapes EHRs publish, the native attendance JSON, and rejections that name the field and never the value."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rapport.services.ingest.normalise import AttendanceRejection, normalise_attendance
from rapport.services.ingest.normalise.reading import CODE_LIKE
from rapport.shared.contracts.attendance import Attendance

FHIR = Path(__file__).parents[1] / "fixtures" / "fhir"
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FHIR / name).read_bytes())  # type: ignore[no-any-return]


def read(document: dict[str, Any] | bytes, tenant: str = "acme") -> list[Attendance | AttendanceRejection]:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return normalise_attendance(body, tenant=tenant, now=NOW)


def one(document: dict[str, Any] | bytes) -> Attendance:
    [result] = read(document)
    assert isinstance(result, Attendance), result
    return result


def rejected(document: dict[str, Any] | bytes) -> list[tuple[str, str]]:
    [result] = read(document)
    assert isinstance(result, AttendanceRejection), result
    return [(p.code, p.field) for p in result.problems]


def native(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "appointment_id": "appt-0007-04", "client_id": "client-0007", "episode_id": "episode-0007-1",
        "clinician_id": "clinician-03", "status": "attended", "start": "2026-03-09T10:00:00+00:00",
        "recorded_at": "2026-03-09T11:00:00+00:00",
    }
    document.update(changes)
    return {k: v for k, v in document.items() if v is not None}


def test_the_r4_spec_appointment_example_is_a_booked_session_with_its_client_and_clinician() -> None:
    appointment = one(fixture("published-r4-appointment-example.json"))
    assert (appointment.appointment_id, appointment.status, appointment.client_id, appointment.clinician_id) == \
        ("example", "booked", "client-0201", "example")
    assert appointment.start == datetime(2013, 12, 10, 9, 0, tzinfo=UTC)
    assert appointment.episode_id is None  # basedOn a ServiceRequest is not an episode of care
    assert appointment.source_format == "fhir-appointment"
    assert [w.code for w in appointment.warnings] == ["unversioned"]


def test_the_r4_spec_home_encounter_is_an_attended_session_under_its_own_id() -> None:
    encounter = one(fixture("published-r4-encounter-example-home.json"))
    assert (encounter.appointment_id, encounter.status, encounter.client_id, encounter.clinician_id) == \
        ("Encounter/home", "attended", "client-0202", "example")
    assert encounter.start == datetime(2015, 1, 17, 6, 0, tzinfo=UTC)


def test_a_client_cancellation_carries_its_reason_code_and_time_and_never_its_text() -> None:
    cancelled = one(fixture("appointment-cancelled-by-client.json"))
    assert (cancelled.status, cancelled.cancelled_by, cancelled.cancellation_reason) == \
        ("cancelled", "client", "pat-lt")
    assert cancelled.cancelled_at == datetime(2026, 3, 9, 7, 35, tzinfo=UTC)
    assert (cancelled.recorded_at, cancelled.version) == (datetime(2026, 3, 9, 7, 40, tzinfo=UTC), 3)
    assert cancelled.episode_id == "episode-0203-1"
    assert "front desk" not in cancelled.model_dump_json()


def test_without_the_cancellation_date_the_time_comes_from_last_updated_with_a_warning() -> None:
    document = fixture("appointment-cancelled-by-client.json")
    document.pop("extension")
    cancelled = one(document)
    assert cancelled.cancelled_at == datetime(2026, 3, 9, 7, 40, tzinfo=UTC)
    assert [w.code for w in cancelled.warnings] == ["cancelled_at_from_last_updated"]
    document.pop("meta")
    unknown = one(document)
    assert unknown.cancelled_at is None
    assert [w.code for w in unknown.warnings] == ["unversioned", "cancellation_time_unknown"]


@pytest.mark.parametrize(("code", "by"), [("pat", "client"), ("pat-fb", "client"), ("prov-pers", "clinic"),
                                          ("maint", "clinic"), ("oth-weath", "unknown")])
def test_who_cancelled_follows_the_cancellation_reason_code(code: str, by: str) -> None:
    document = fixture("appointment-cancelled-by-client.json")
    document["cancelationReason"]["coding"][0]["code"] = code
    assert one(document).cancelled_by == by


def test_a_history_bundle_answers_each_appointment_and_encounter_and_resolves_urn_references() -> None:
    results = read(fixture("bundle-appointment-history.json"))
    assert all(isinstance(r, Attendance) for r in results)
    noshow, encounter = results
    assert isinstance(noshow, Attendance) and isinstance(encounter, Attendance)
    assert (noshow.appointment_id, noshow.status, noshow.client_id, noshow.episode_id) == \
        ("appt-0204-03", "no_show", "client-0204", "episode-0204-1")
    # an Encounter naming its Appointment is that appointment's later state: one id, one record
    assert (encounter.appointment_id, encounter.status, encounter.episode_id, encounter.clinician_id) == \
        ("appt-0204-02", "attended", "episode-0204-1", "clinician-07")


@pytest.mark.parametrize(("status", "expected"), [("arrived", "attended"), ("checked-in", "attended"),
                                                  ("fulfilled", "attended"), ("noshow", "no_show"),
                                                  ("entered-in-error", "void")])
def test_appointment_statuses(status: str, expected: str) -> None:
    document = fixture("published-r4-appointment-example.json")
    document["status"] = status
    assert one(document).status == expected


def test_an_appointment_status_rapport_does_not_record_is_rejected_naming_what_it_records() -> None:
    document = fixture("published-r4-appointment-example.json")
    document["status"] = "waitlist"
    [result] = read(document)
    assert isinstance(result, AttendanceRejection)
    [problem] = result.problems
    assert (problem.code, problem.field) == ("status_not_recorded", "status")
    assert problem.expected is not None and "noshow" in problem.expected


def test_a_no_show_dated_in_the_future_is_refused() -> None:
    document = fixture("published-r4-appointment-example.json")
    document.update(status="noshow", start="2026-04-01T10:00:00Z")
    assert rejected(document) == [("out_of_range", "start")]


def test_a_group_appointment_with_two_patients_is_refused_for_now() -> None:
    document = fixture("published-r4-appointment-example.json")
    document["participant"].append({"actor": {"reference": "Patient/client-0299"}})
    assert rejected(document) == [("several_patients", "participant")]


def test_an_appointment_without_a_patient_or_a_start_names_both() -> None:
    document = fixture("published-r4-appointment-example.json")
    document["participant"] = [p for p in document["participant"] if "Patient" not in p["actor"]["reference"]]
    document.pop("start")
    assert rejected(document) == [("missing_field", "participant"), ("missing_field", "start")]


def test_a_rejection_never_shows_an_id_that_breaks_the_rule_or_free_text() -> None:
    document = fixture("published-r4-appointment-example.json")
    document["participant"][0]["actor"]["reference"] = "Patient/Jane Doe 1970-01-01"
    [result] = read(document)
    assert isinstance(result, AttendanceRejection)
    assert [(p.code, p.field) for p in result.problems] == [("invalid_id", "participant[0].actor.reference")]
    assert "Jane" not in result.problems[0].model_dump_json()


def test_bundle_entries_are_rejected_at_their_own_path() -> None:
    bundle = fixture("bundle-appointment-history.json")
    bundle["entry"][1]["resource"]["status"] = "proposed"
    results = read(bundle)
    assert isinstance(results[0], AttendanceRejection) and isinstance(results[1], Attendance)
    assert [(p.code, p.field) for p in results[0].problems] == [("status_not_recorded", "entry[1].resource.status")]
    assert results[0].appointment_id == "appt-0204-03"


def test_the_native_attendance_json() -> None:
    attended = one(native())
    assert (attended.appointment_id, attended.status, attended.episode_id, attended.source_format) == \
        ("appt-0007-04", "attended", "episode-0007-1", "native")
    cancelled = one(native(status="cancelled", cancelled_at="2026-03-09T08:00:00+00:00", cancelled_by="client",
                           reason="pat-lt"))
    assert (cancelled.cancelled_by, cancelled.cancellation_reason) == ("client", "pat-lt")
    assert one(native(status="cancelled", start=None)).cancelled_by == "unknown"


@pytest.mark.parametrize(("changes", "problems"), [
    ({"status": "missed"}, [("invalid_code", "status")]),
    ({"start": None}, [("missing_field", "start")]),
    ({"recorded_at": "2026-03-09"}, [("date_without_time", "recorded_at")]),
    ({"cancelled_by": "client"}, [("not_cancelled", "cancelled_by")]),
    ({"status": "cancelled", "reason": "the client said she was too low to come"}, [("invalid_code", "reason")]),
    ({"client_id": "Jane Doe"}, [("invalid_id", "client_id")]),
    ({"room": "3"}, [("unknown_field", "room")]),
    ({"tenant": "another-clinic"}, [("tenant_mismatch", "tenant")]),
])
def test_native_rejections_name_the_field(changes: dict[str, Any], problems: list[tuple[str, str]]) -> None:
    result = rejected(native(**changes))
    assert result == problems
    [answer] = read(native(**changes))
    assert "Jane" not in str(answer) and "too low" not in str(answer)


def test_a_cloudevent_wrapping_an_appointment_for_another_tenant_is_refused() -> None:
    event = {"specversion": "1.0", "id": "e-1", "type": "appointment", "source": "ehr", "tenant": "other",
             "data": fixture("published-r4-appointment-example.json")}
    assert rejected(event) == [("tenant_mismatch", "tenant")]
    event["tenant"] = "acme"
    assert one(event).appointment_id == "example"


def test_a_body_that_is_not_json_is_one_rejection() -> None:
    assert rejected(b"{\"appointment_id\": ") == [("invalid_json", "body")]


def test_a_finished_episode_of_care_is_a_planned_ending_and_a_cancelled_one_unplanned() -> None:
    from rapport.shared.contracts.attendance import EpisodeEnding

    [finished] = read(fixture("episodeofcare-finished.json"))
    assert isinstance(finished, EpisodeEnding)
    assert (finished.episode_id, finished.client_id, finished.ending, finished.version) == \
        ("episode-0205-1", "client-0205", "planned", 4)
    assert finished.ended_at == datetime(2026, 3, 6, 16, 0, tzinfo=UTC)
    document = fixture("episodeofcare-finished.json")
    document["status"] = "cancelled"
    [cancelled] = read(document)
    assert isinstance(cancelled, EpisodeEnding) and cancelled.ending == "unplanned"
    document["status"] = "finished"
    document["extension"] = [{"url": "http://rapport.dev/fhir/StructureDefinition/ending", "valueCode": "unplanned"}]
    document.pop("period")
    [marked] = read(document)
    assert isinstance(marked, EpisodeEnding) and marked.ending == "unplanned"
    assert [w.code for w in marked.warnings] == ["ended_at_from_last_updated"]


def test_an_active_episode_of_care_is_no_ending_alone_and_only_supports_in_a_bundle() -> None:
    document = fixture("episodeofcare-finished.json")
    document["status"] = "active"
    assert rejected(document) == [("status_not_recorded", "status")]
    bundle = fixture("bundle-appointment-history.json")
    bundle["entry"].append({"resource": document})
    assert len(read(bundle)) == 2  # the two attendance entries; the open episode is read, not answered


def test_the_native_ending() -> None:
    from rapport.shared.contracts.attendance import EpisodeEnding

    ending = {"client_id": "client-0007", "episode_id": "episode-0007-1", "ending": "planned",
              "ended_at": "2026-03-09T11:00:00+00:00", "recorded_at": "2026-03-09T11:05:00+00:00"}
    [result] = read(ending)
    assert isinstance(result, EpisodeEnding) and result.ending == "planned"
    assert rejected({**ending, "ending": "dropped out"}) == [("invalid_code", "ending")]
    assert rejected({k: v for k, v in ending.items() if k != "episode_id"}) == [("missing_field", "episode_id")]


# Free text that a clinic's feed could carry in any field: a name, a note, a date of birth.
PHI_LIKE = st.one_of(
    st.from_regex(r"[A-Z][a-z]{2,10} [A-Z][a-z]{2,12}( [0-9]{2}/[0-9]{2}/[0-9]{4})?", fullmatch=True),
    st.text(min_size=8, max_size=40).filter(lambda t: not CODE_LIKE.fullmatch(t) and t.strip() == t
                                            and sum(c.isalpha() for c in t) >= 5),
)


@settings(max_examples=150, deadline=None)
@given(field_name=st.sampled_from(["appointment_id", "client_id", "episode_id", "clinician_id", "status", "start",
                                   "recorded_at", "cancelled_at", "cancelled_by", "reason"]),
       text=PHI_LIKE)
def test_no_rejection_ever_repeats_free_text_from_the_payload(field_name: str, text: str) -> None:
    document = native(status="cancelled", cancelled_at="2026-03-09T08:00:00+00:00")
    document[field_name] = text
    [result] = read(document)
    assert isinstance(result, AttendanceRejection)  # free text fits no field
    shown_to_it = json.dumps([p.model_dump() for p in result.problems], ensure_ascii=False)
    assert text not in shown_to_it and json.dumps(text)[1:-1] not in shown_to_it
