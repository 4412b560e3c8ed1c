"""FHIR R4 shapes of the gateway's answers, as plain functions: OperationOutcome from Rapport's
problems (with a FHIRPath `expression` where the problem names an element), the batch-response of a
Bundle, which inbound subject a Bundle goes to (`bundle_channel`), and the CapabilityStatement saying
exactly what is supported.

Rapport's own problem code travels in `issue.details.coding` (system `PROBLEM_CODES`), beside the
nearest FHIR issue type in `issue.code` (http://hl7.org/fhir/R4/valueset-issue-type.html)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from rapport.services.gateway.answers import Answer
from rapport.shared.contracts.problems import Problem

FHIR_VERSION = "4.0.1"
FHIR_JSON = "application/fhir+json"
PROBLEM_CODES = "urn:rapport:problem-code"
SUPPORTED_BUNDLE_TYPES = ("batch", "collection")

# Rapport's problem codes -> FHIR issue type; anything else is `invalid`
ISSUE_TYPES = {
    "missing_field": "required", "missing_items": "required", "empty_bundle": "required", "missing_total": "required",
    "invalid_json": "structure", "invalid_fhir": "structure", "not_an_object": "structure",
    "duplicate_key": "duplicate", "duplicate_item": "duplicate",
    "invalid_id": "value", "out_of_range": "value", "not_a_number": "value", "invalid_datetime": "value",
    "date_without_time": "value", "missing_timezone": "value", "too_long": "too-long",
    "unknown_instrument": "not-supported", "ambiguous_instrument": "not-supported",
    "unsupported_resource": "not-supported", "not_fhir_r4": "not-supported", "unsupported_media_type": "not-supported",
    "unscorable_answer": "code-invalid", "unmapped_link_id": "code-invalid", "unknown_item": "code-invalid",
    "unmapped_code": "code-invalid",
    "status_not_final": "business-rule", "total_mismatch": "business-rule", "derived_from_response": "business-rule",
    "unresolved_reference": "not-found", "invalid_reference": "value",
    "tenant_mismatch": "security", "invalid_tenant": "security",
    "too_large": "too-long", "unauthenticated": "login", "forbidden": "forbidden",
    "wrong_resource_type": "not-supported", "transaction_not_supported": "not-supported",
    "unsupported_bundle_type": "not-supported", "invalid_idempotency_key": "value",
    "idempotency_key_reused": "business-rule", "store_unavailable": "transient",
    "not_found": "not-found", "method_not_allowed": "not-supported",
    "mixed_bundle": "not-supported", "status_not_recorded": "not-supported", "several_patients": "not-supported",
    "invalid_code": "code-invalid", "not_cancelled": "business-rule", "unknown_field": "structure",
    "broker_unavailable": "transient", "pending": "informational", "accepted": "informational",
    "instrument_inferred": "informational", "temporary_submission_id": "informational",
}

# the top-level elements of what ingest reads; a problem naming anything else ("responses",
# "total": Rapport's own words for what it computed) gets no FHIRPath, only its words
ELEMENTS = {
    "QuestionnaireResponse": {"id", "meta", "contained", "extension", "identifier", "basedOn", "partOf",
                              "questionnaire", "status", "subject", "encounter", "authored", "author", "source",
                              "item"},
    "Observation": {"id", "meta", "contained", "extension", "identifier", "basedOn", "partOf", "status", "category",
                    "code", "subject", "encounter", "effective", "issued", "performer", "value", "dataAbsentReason",
                    "hasMember", "derivedFrom", "component"},
    "Bundle": {"id", "meta", "identifier", "type", "timestamp", "total", "entry"},
    # attendance (ingest's normalise/fhir/attendance.py reads these)
    "Appointment": {"id", "meta", "extension", "identifier", "status", "cancelationReason", "start", "end",
                    "basedOn", "participant"},
    "Encounter": {"id", "meta", "extension", "identifier", "status", "subject", "episodeOfCare", "participant",
                  "appointment", "period"},
    "EpisodeOfCare": {"id", "meta", "extension", "identifier", "status", "patient", "period"},
}
# the resources that are attendance (in.attendance), and those that are submissions (in.submissions)
ATTENDANCE_TYPES = ("Appointment", "Encounter", "EpisodeOfCare")
SUBMISSION_TYPES = ("QuestionnaireResponse", "Observation")
# a choice element's type as FHIRPath names it: primitive types start lower case (valueDateTime is
# value.ofType(dateTime)), complex types upper case (valueCoding is value.ofType(Coding))
PRIMITIVES = {"Boolean", "Code", "Date", "DateTime", "Decimal", "Instant", "Integer", "String", "Time", "Uri",
              "Url", "Canonical", "Id", "Oid", "Uuid", "Markdown", "Base64Binary", "PositiveInt", "UnsignedInt"}
_SEGMENT = re.compile(r"^([A-Za-z_]+)((?:\[\d+\])*)$")
# a choice element written with its type, `valueCoding`, is `value.ofType(Coding)` in FHIRPath
_CHOICE = re.compile(r"^(value|effective)([A-Z][A-Za-z]*)$")


def fhirpath(resource_type: str | None, field: str) -> str | None:
    """`item[2].answer[0].valueCoding` on a QuestionnaireResponse ->
    `QuestionnaireResponse.item[2].answer[0].value.ofType(Coding)`; None when the field is not an element."""
    if resource_type not in ELEMENTS or not field:
        return None
    out = [resource_type]
    owner = resource_type
    for n, segment in enumerate(field.split(".")):
        match = _SEGMENT.match(segment)
        if match is None:
            return None
        name, index = match.groups()
        choice = _CHOICE.match(name)
        if n == 0 and (choice.group(1) if choice else name) not in ELEMENTS[owner]:
            return None
        if choice:
            kind = choice.group(2)
            kind = kind[0].lower() + kind[1:] if kind in PRIMITIVES else kind
            out.append(f"{choice.group(1)}.ofType({kind}){index}")
        else:
            out.append(f"{name}{index}")
    return ".".join(out)


def issue(severity: str, code: str, diagnostics: str, *, expression: str | None = None,
          rapport_code: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"severity": severity, "code": code}
    if rapport_code:
        entry["details"] = {"coding": [{"system": PROBLEM_CODES, "code": rapport_code}]}
    entry["diagnostics"] = diagnostics
    if expression:
        entry["expression"] = [expression]
    return entry


def problem_issue(problem: Problem, severity: str, resource_type: str | None) -> dict[str, Any]:
    words = problem.message + (f" (expected {problem.expected})" if problem.expected else "")
    expression = fhirpath(resource_type, problem.field)
    if expression is None and problem.field:
        words = f"{problem.field}: {words}"
    return issue(severity, ISSUE_TYPES.get(problem.code, "invalid"), words, expression=expression,
                 rapport_code=problem.code)


def operation_outcome(issues: Iterable[dict[str, Any]]) -> dict[str, Any]:
    listed = list(issues)
    return {"resourceType": "OperationOutcome",
            "issue": listed or [issue("information", "informational", "no problems")]}


STORED_AS = {"submission": "submission", "appointment": "the state of appointment",
             "ending": "the ending of episode"}


def outcome_of(answer: Answer, resource_type: str | None) -> dict[str, Any]:
    """An accepted part: what it was stored as, then its warnings. A rejected one: every problem."""
    if answer.outcome == "rejected":
        return operation_outcome(problem_issue(p, "error", resource_type) for p in answer.problems)
    stored = issue("information", "informational",
                   f"accepted as {STORED_AS[answer.record]} {answer.submission_id}, revision {answer.revision} "
                   f"({answer.disposition})", rapport_code="accepted")
    return operation_outcome([stored, *(problem_issue(p, "warning", resource_type) for p in answer.problems)])


def location(answer: Answer, resource_type: str) -> str:
    """Where an accepted resource's stored version is named: an Encounter naming its Appointment is
    that appointment's state (`Appointment/<id>`), one naming none is kept as `Encounter/<id>`, an
    EpisodeOfCare is its episode's ending."""
    stored = answer.submission_id or ""
    if answer.record == "appointment":
        if stored.startswith("Encounter/"):
            resource_type, stored = "Encounter", stored.removeprefix("Encounter/")
        else:
            resource_type = "Appointment"
    elif answer.record == "ending":
        resource_type = "EpisodeOfCare"
    return f"/fhir/{resource_type}/{quote(stored, safe='')}/_history/{answer.revision}"


def bundle_channel(bundle: dict[str, Any]) -> str | None:
    """Which inbound subject a Bundle goes to: `attendance` when it holds an Appointment, Encounter or
    EpisodeOfCare and no QuestionnaireResponse or Observation, else `submissions` (ingest answers
    whatever else it holds). None for a mixed Bundle: an Appointment beside a QuestionnaireResponse or
    Observation, which one message cannot carry (ingest takes submissions and attendance on separate
    subjects); the caller splits it. An Encounter or EpisodeOfCare beside a submission is the
    submission's context (its episode), as ingest reads it, and recorded as no attendance."""
    entries = bundle.get("entry")
    kinds = {e["resource"].get("resourceType") for e in entries
             if isinstance(e, dict) and isinstance(e.get("resource"), dict)} if isinstance(entries, list) else set()
    if not kinds & set(SUBMISSION_TYPES):
        return "attendance" if kinds & set(ATTENDANCE_TYPES) else "submissions"
    return None if "Appointment" in kinds else "submissions"


def refusal(code: str, diagnostics: str, *, severity: str = "error") -> dict[str, Any]:
    return operation_outcome([issue(severity, ISSUE_TYPES.get(code, "invalid"), diagnostics, rapport_code=code)])


def batch_response(answers: Sequence[Answer]) -> dict[str, Any]:
    """One entry per answered part, in ingest's order; supporting entries (a Patient, a Questionnaire)
    get none, so the entries need not line up with the request's."""
    entries = []
    for answer in answers:
        response: dict[str, Any] = {"status": "201 Created" if answer.outcome == "accepted"
                                    else "422 Unprocessable Entity", "outcome": outcome_of(answer, "Bundle")}
        if answer.outcome == "accepted":
            response["etag"] = f'W/"{answer.revision}"'
        entries.append({"response": response})
    return {"resourceType": "Bundle", "type": "batch-response", "entry": entries}


def capability_statement(*, now: datetime, version: str, max_body_bytes: int, wait_seconds: float) -> dict[str, Any]:
    def create(subject: str, stored: str) -> dict[str, Any]:
        return {"code": "create", "documentation": (
            f"The gateway publishes the resource to rapport.<tenant>.{subject} and waits up to {wait_seconds:g} s "
            f"for ingest's answer: 201 accepted (an OperationOutcome with the {stored} and any warnings), 422 "
            f"rejected (an OperationOutcome naming every problem), 202 when no answer came in time, with a "
            f"Location to GET for the answer (GET [base]/_messages/<id>: 202 while pending, 200 with this same "
            f"answer once given; or resend the same request). An Idempotency-Key sent again with another body is "
            f"refused (422, idempotency_key_reused) and nothing published.")}

    submission = create("in.submissions", "submission id")
    attendance = create("in.attendance", "appointment id and revision")
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": now.strftime("%Y-%m-%d"),
        "publisher": "Rapport",
        "kind": "instance",
        "software": {"name": "Rapport", "version": version},
        "implementation": {"description": "Rapport gateway: measurement-based-care submissions and attendance in "
                                          "(FHIR R4)"},
        "fhirVersion": FHIR_VERSION,
        "format": [FHIR_JSON, "application/json"],
        "rest": [{
            "mode": "server",
            "documentation": (
                f"Only what is listed here is supported: create of QuestionnaireResponse and Observation "
                f"(submissions), of Appointment, Encounter and EpisodeOfCare (attendance), and Bundles of type "
                f"batch or collection posted to the base. No read, search, update or history yet. Bodies up to "
                f"{max_body_bytes} bytes (413 beyond). Header Idempotency-Key (1-255 visible ASCII characters) "
                f"makes a resend recognised; without it, the same body is. Subscription notifications (rest-hook, "
                f"Subscriptions R5 Backport IG, payload full-resource) at POST [base]/subscription-hook/<subscription "
                f"id>: the resources they carry are answered as a batch of them; handshake and heartbeat with 200."),
            "security": {
                "cors": False,
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                         "code": "OAuth"}]}],
                "description": ("Bearer JWT. The tenant comes from the token's tenant claim, never from the "
                                "resource. Role integration may submit; clinician, lead and admin may not (403)."),
            },
            "resource": [
                {"type": "QuestionnaireResponse", "interaction": [submission], "versioning": "no-version",
                 "conditionalCreate": False,
                 "documentation": "status completed or amended; the instrument from the questionnaire canonical "
                                  "or the items (see the README, FHIR R4)"},
                {"type": "Observation", "interaction": [submission], "versioning": "no-version",
                 "conditionalCreate": False,
                 "documentation": "an instrument's LOINC total-score Observation (a total-only submission)"},
                {"type": "Appointment", "interaction": [attendance], "versioning": "no-version",
                 "conditionalCreate": False,
                 "documentation": "booked, arrived, checked-in, fulfilled, noshow, cancelled (cancelationReason) or "
                                  "entered-in-error; one Patient participant; the same id again is a later state, "
                                  "ordered by meta.lastUpdated and meta.versionId (see the README, Sending "
                                  "attendance)"},
                {"type": "Encounter", "interaction": [attendance], "versioning": "no-version",
                 "conditionalCreate": False,
                 "documentation": "finished, cancelled, planned (and the in-progress states) with period.start; an "
                                  "Encounter naming its Appointment is that appointment's later state"},
                {"type": "EpisodeOfCare", "interaction": [attendance], "versioning": "no-version",
                 "conditionalCreate": False,
                 "documentation": "an episode's ending: finished (planned) or cancelled (unplanned), or as the "
                                  "extension http://rapport.dev/fhir/StructureDefinition/ending says; other "
                                  "statuses are refused"},
            ],
            "interaction": [{
                "code": "batch",
                "documentation": ("POST [base] with a Bundle of type batch or collection: each entry is accepted "
                                  "or rejected on its own; the answer is a batch-response with one entry per "
                                  "answered entry (supporting entries such as Patient get none). A Bundle is "
                                  "either submissions (QuestionnaireResponse, Observation; an Encounter or "
                                  "EpisodeOfCare beside them is their context, not attendance) or attendance "
                                  "(Appointment, Encounter, EpisodeOfCare); one holding an Appointment beside a "
                                  "submission is refused (422 mixed_bundle): send them as two Bundles. A "
                                  "transaction Bundle is refused (422): send the same entries as a batch."),
            }],
        }],
    }
