"""The gateway's attendance parts, pure: which subject a Bundle goes to (a mixed one refused), FHIRPath
for attendance's problems, ingest's attendance answers as the caller is told them (FHIR and native),
message ids kept apart from submissions', and the waiter listening for attendance answers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_gateway_answers import Listening

from rapport.services.gateway import fhir
from rapport.services.gateway.answers import Answer, AnswerWaiter
from rapport.services.gateway.http import native_part
from rapport.services.gateway.intake import ATTENDANCE, SUBMISSIONS, message_id_for


def bundle(*kinds: str) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "batch",
            "entry": [{"resource": {"resourceType": kind, "status": "finished"}} for kind in kinds]}


@pytest.mark.parametrize(("kinds", "channel"), [
    (("Appointment", "Appointment", "Patient"), "attendance"),
    (("Encounter",), "attendance"),
    (("EpisodeOfCare", "Practitioner"), "attendance"),
    (("QuestionnaireResponse", "Patient"), "submissions"),
    (("Observation",), "submissions"),
    # an Encounter or EpisodeOfCare beside a response is its context, as ingest reads it
    (("QuestionnaireResponse", "Encounter", "EpisodeOfCare"), "submissions"),
    (("QuestionnaireResponse", "Appointment"), None),  # mixed: split it
    (("Appointment", "Observation", "Encounter"), None),
    (("Patient",), "submissions"),  # neither: ingest answers it (only supporting entries)
    ((), "submissions"),
])
def test_a_bundle_is_either_submissions_or_attendance_and_a_mixed_one_is_refused(
        kinds: tuple[str, ...], channel: str | None) -> None:
    assert fhir.bundle_channel(bundle(*kinds)) == channel


def test_a_bundle_whose_entries_cannot_be_read_goes_where_ingest_will_say_so() -> None:
    assert fhir.bundle_channel({"resourceType": "Bundle", "entry": "x"}) == "submissions"
    assert fhir.bundle_channel({"resourceType": "Bundle", "entry": [1, {"resource": []}]}) == "submissions"


@pytest.mark.parametrize(("resource", "field", "path"), [
    ("Appointment", "participant[1].actor.reference", "Appointment.participant[1].actor.reference"),
    ("Appointment", "cancelationReason.coding[0].code", "Appointment.cancelationReason.coding[0].code"),
    ("Appointment", "extension[0].valueDateTime", "Appointment.extension[0].value.ofType(dateTime)"),
    ("Appointment", "meta.lastUpdated", "Appointment.meta.lastUpdated"),
    ("Appointment", "cancellationReason.coding[0].code", None),  # R5's spelling: no R4 element
    ("Encounter", "period.start", "Encounter.period.start"),
    ("Encounter", "appointment[0]", "Encounter.appointment[0]"),
    ("EpisodeOfCare", "extension[2].valueCode", "EpisodeOfCare.extension[2].value.ofType(code)"),
    ("EpisodeOfCare", "patient", "EpisodeOfCare.patient"),
    ("Bundle", "entry[3].resource.start", "Bundle.entry[3].resource.start"),
])
def test_attendance_problems_name_their_element_as_fhirpath(resource: str, field: str, path: str | None) -> None:
    assert fhir.fhirpath(resource, field) == path


def accepted(**data: Any) -> dict[str, Any]:
    return {"revision": 2, "disposition": "amended", "inbound_message_id": "http-body:1", **data}


APPOINTMENT = {"appointment_id": "appt-0501-03", "source_format": "fhir-appointment", "warnings": [
    {"field": "meta", "code": "unversioned", "message": "no meta.lastUpdated"}]}


def test_an_accepted_appointment_state_is_answered_with_its_id_revision_and_warnings() -> None:
    answer = Answer.from_event("rapport.attendance.accepted.v1", accepted(attendance=APPOINTMENT))
    assert (answer.record, answer.submission_id, answer.revision, answer.disposition) == \
        ("appointment", "appt-0501-03", 2, "amended")
    assert Answer.from_stored(json.loads(json.dumps(answer.stored()))) == answer
    outcome = fhir.outcome_of(answer, "Appointment")
    assert outcome["issue"][0]["diagnostics"] == "accepted as the state of appointment appt-0501-03, revision 2 " \
                                                 "(amended)"
    assert outcome["issue"][1]["expression"] == ["Appointment.meta"]
    assert fhir.location(answer, "Appointment") == "/fhir/Appointment/appt-0501-03/_history/2"
    # an Encounter naming its appointment is that appointment's state; one naming none is its own
    assert fhir.location(answer, "Encounter") == "/fhir/Appointment/appt-0501-03/_history/2"
    own = Answer.from_event("rapport.attendance.accepted.v1",
                            accepted(attendance={**APPOINTMENT, "appointment_id": "Encounter/enc 1"}))
    assert fhir.location(own, "Encounter") == "/fhir/Encounter/enc%201/_history/2"
    assert native_part(answer) == {"status": "accepted", "appointment_id": "appt-0501-03", "revision": 2,
                                   "disposition": "amended",
                                   "warnings": [{**w, "expected": None} for w in APPOINTMENT["warnings"]]}


def test_an_accepted_ending_is_answered_with_its_episode() -> None:
    ending = {"episode_id": "episode-0501-1", "client_id": "client-0501", "source_format": "fhir-episode-of-care"}
    answer = Answer.from_event("rapport.attendance.accepted.v1", accepted(ending=ending, disposition="new",
                                                                          revision=1))
    assert fhir.location(answer, "EpisodeOfCare") == "/fhir/EpisodeOfCare/episode-0501-1/_history/1"
    assert fhir.outcome_of(answer, "EpisodeOfCare")["issue"][0]["diagnostics"] == \
        "accepted as the ending of episode episode-0501-1, revision 1 (new)"
    assert native_part(answer)["episode_id"] == "episode-0501-1" and "instrument" not in native_part(answer)


def test_a_rejected_attendance_names_every_problem_by_fhirpath_and_natively() -> None:
    answer = Answer.from_event("rapport.attendance.rejected.v1", {
        "inbound_message_id": "http-body:2", "appointment_id": None, "source_format": "fhir-appointment",
        "problems": [{"field": "status", "code": "status_not_recorded", "message": "status is 'waitlist'"},
                     {"field": "participant", "code": "missing_field", "message": "no participant is a Patient"}]})
    outcome = fhir.outcome_of(answer, "Appointment")
    assert [(i["severity"], i["code"], i["expression"]) for i in outcome["issue"]] == [
        ("error", "not-supported", ["Appointment.status"]), ("error", "required", ["Appointment.participant"])]
    assert native_part(answer) == {"status": "rejected", "appointment_id": None,
                                   "problems": [p.model_dump() for p in answer.problems]}


def test_an_answer_stored_before_attendance_came_is_still_a_submissions() -> None:
    stored = {"outcome": "accepted", "part": 1, "parts": 1, "submission_id": "qr-1", "source_format": "fhir",
              "revision": 1, "disposition": "new", "instrument": "phq9", "problems": []}
    assert Answer.from_stored(stored).record == "submission"


def test_attendance_message_ids_never_meet_submissions() -> None:
    body = b'{"resourceType": "Appointment"}'
    assert message_id_for("acme", body, None) == message_id_for("acme", body, None, SUBMISSIONS)
    assert message_id_for("acme", body, None, ATTENDANCE) != message_id_for("acme", body, None)
    assert message_id_for("acme", body, "k-1", ATTENDANCE) != message_id_for("acme", body, "k-1")
    assert message_id_for("acme", body, "k-1", ATTENDANCE).startswith("http-key:")


async def test_the_waiter_listens_for_attendance_answers_once_asked_to() -> None:
    broker = Listening()
    waiter = AnswerWaiter(broker)  # type: ignore[arg-type]
    submission = await waiter.expect("acme", "m-1")
    appointment = await waiter.expect("acme", "m-2", "attendance")
    assert set(broker.callbacks) == {f"rapport.acme.{e}.{v}" for e in ("submission", "attendance")
                                     for v in ("accepted", "rejected")}
    broker.deliver("rapport.acme.attendance.accepted", {
        "type": "rapport.attendance.accepted.v1", "tenant": "acme",
        "data": accepted(attendance=APPOINTMENT, inbound_message_id="m-2")})
    assert appointment.answered and not submission.answered
    assert appointment.answers[1].submission_id == "appt-0501-03"
