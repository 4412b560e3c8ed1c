"""FHIR R4 Appointment and Encounter (alone or in a Bundle) as attendance, the shapes EHRs publish.

**Appointment.** `id` (else `identifier.value`) is the appointment id. `status`: booked -> booked;
arrived, checked-in, fulfilled -> attended; noshow -> no_show; cancelled -> cancelled; entered-in-error
-> void; proposed, pending and waitlist are not appointments Rapport records yet (`status_not_recorded`).
The client is the one participant whose `actor` is a Patient (`several_patients` when they differ:
group sessions are not recorded yet); the clinician the first Practitioner or PractitionerRole actor.
`start` is required unless cancelled or void (R4 app-3 allows it missing only for proposed and
cancelled appointments). Episode: the Rapport episode extension, else `basedOn` EpisodeOfCare/<id>
(references.py), else none.

**Cancellation.** `cancelationReason` (R4's spelling; R5's `cancellationReason` is read too): a coding
of http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason gives the reason code and who
cancelled (`pat`, `pat-*` the client; `prov`, `prov-*`, `maint`, `meds-inc` the clinic; `other`,
`oth-*` unknown); another system's code is kept as the reason with canceller unknown; text is never
read. R4 has no element for when it was cancelled: Rapport reads R5's element through its cross-version
extension `http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.cancellationDate`
(valueDateTime), else takes `meta.lastUpdated` of the cancelled state with the warning
`cancelled_at_from_last_updated` (right when the EHR sends the cancellation as it happens, late when a
cancelled appointment is edited again), else none with the warning `cancellation_time_unknown` (never
counted as a late cancellation).

**Encounter.** finished (and arrived, triaged, in-progress, onleave) -> attended; planned -> booked;
cancelled -> cancelled (by whom unknown; time as above, from `meta.lastUpdated`); entered-in-error ->
void. `subject` Patient is the client, the first `participant.individual` Practitioner(Role) the
clinician, `period.start` the start, `episodeOfCare` (or the episode extension) the episode. An
Encounter naming its Appointment (`appointment[0]`) is that appointment's later state (one id, one
record); otherwise its id is `Encounter/<id>`.

**Order of states.** `meta.lastUpdated` is `recorded_at` and a whole-number `meta.versionId` the
version: an older state arriving late is acknowledged as `outdated` and changes nothing. Without
either, the state that arrives last stands (warning `unversioned`).

**EpisodeOfCare** (an episode's ending): finished -> planned (the clinic recorded the ending),
cancelled -> unplanned (withdrawn), unless the extension http://rapport.dev/fhir/StructureDefinition/ending
(valueCode planned or unplanned) says which; `patient` is the client, `period.end` when it ended (else
`meta.lastUpdated` with the warning `ended_at_from_last_updated`). Other statuses are not endings.

**Bundle** (any type, e.g. a Subscription notification or a search result): every Appointment,
Encounter and finished or cancelled EpisodeOfCare entry gets its own answer, in order; Patient,
Practitioner, PractitionerRole, Location, an EpisodeOfCare of another status, Organization,
HealthcareService, Slot, Schedule, Parameters and SubscriptionStatus entries are read for `urn:`
references and get none; any other entry is rejected.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rapport.services.ingest.normalise.attendance import (
    AttendanceRejection,
    AttendanceResult,
    build,
    kept,
    read_start,
)
from rapport.services.ingest.normalise.fhir.context import _objects
from rapport.services.ingest.normalise.fhir.references import (
    PRACTITIONER,
    _episode,
    _parse_reference,
    _reference_id,
    _subject,
)
from rapport.services.ingest.normalise.reading import CODE_LIKE, check_id, read_instant, readable_id, shown
from rapport.shared.contracts.attendance import AttendanceSource, AttendanceStatus, CancelledBy, Ending
from rapport.shared.contracts.problems import Problem

APPOINTMENT_STATUS: dict[str, AttendanceStatus] = {
    "booked": "booked", "arrived": "attended", "checked-in": "attended", "fulfilled": "attended",
    "noshow": "no_show", "cancelled": "cancelled", "entered-in-error": "void",
}
ENCOUNTER_STATUS: dict[str, AttendanceStatus] = {
    "planned": "booked", "arrived": "attended", "triaged": "attended", "in-progress": "attended",
    "onleave": "attended", "finished": "attended", "cancelled": "cancelled", "entered-in-error": "void",
}
CANCELLATION_DATE = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.cancellationDate"
CANCELLATION_REASONS = "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason"
SUPPORTING = frozenset({"Patient", "Practitioner", "PractitionerRole", "Location", "Organization",
                        "HealthcareService", "Slot", "Schedule", "Parameters", "SubscriptionStatus"})
# an EpisodeOfCare is an ending when finished or cancelled; in a Bundle, other statuses only support
EPISODE_ENDINGS: dict[str, Ending] = {"finished": "planned", "cancelled": "unplanned"}
ENDING_EXTENSION = "http://rapport.dev/fhir/StructureDefinition/ending"
Bundled = dict[str, dict[str, Any] | None]


def normalise_fhir_attendance(document: dict[str, Any], tenant: str, now: datetime) -> list[AttendanceResult]:
    if document.get("resourceType") != "Bundle":
        return [_resource(document, tenant, now, {}, prefix="")]
    entries = document.get("entry")
    if not isinstance(entries, list) or not entries:
        return [AttendanceRejection.of(Problem(field="entry", code="empty_bundle", message="the Bundle has no entries",
                                               expected="entries whose resource is an Appointment or Encounter"))]
    bundle: Bundled = {}
    for entry in entries:
        full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(full_url, str) and full_url.startswith("urn:") and isinstance(resource, dict):
            bundle[full_url] = None if full_url in bundle else resource  # a fullUrl twice names neither
    results: list[AttendanceResult] = []
    for n, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            results.append(AttendanceRejection.of(Problem(
                field=f"entry[{n}].resource", code="missing_field", message=f"entry[{n}] has no resource object",
                expected="an Appointment or Encounter in entry.resource")))
        elif resource.get("resourceType") in SUPPORTING or (
                resource.get("resourceType") == "EpisodeOfCare" and resource.get("status") not in EPISODE_ENDINGS):
            continue
        else:
            results.append(_resource(resource, tenant, now, bundle, prefix=f"entry[{n}].resource."))
    if not results:
        return [AttendanceRejection.of(Problem(
            field="entry", code="empty_bundle", message="the Bundle holds only supporting resources",
            expected="entries whose resource is an Appointment or Encounter"))]
    return results


def _resource(resource: dict[str, Any], tenant: str, now: datetime, bundle: Bundled, prefix: str) -> AttendanceResult:
    kind = resource.get("resourceType")
    if kind == "Appointment":
        result = _appointment(resource, tenant, now, bundle)
    elif kind == "Encounter":
        result = _encounter(resource, tenant, now, bundle)
    elif kind == "EpisodeOfCare":
        result = _episode_of_care(resource, tenant, now, bundle)
    else:
        result = AttendanceRejection.of(Problem(
            field="resourceType", code="unsupported_resource",
            message=f"resourceType {shown(kind)} is not attendance" if isinstance(kind, str)
            else "resourceType is not a string",
            expected="Appointment, Encounter, EpisodeOfCare (finished or cancelled), or a Bundle of them"))
    if isinstance(result, AttendanceRejection) and prefix:
        problems = [p.model_copy(update={"field": prefix + p.field}) for p in result.problems]
        return AttendanceRejection(result.appointment_id, result.source_format, problems)
    return result


def _own_id(resource: dict[str, Any], problems: list[Problem]) -> str | None:
    ident = resource.get("id")
    field = "id"
    if ident is None:
        identifiers = _objects(resource.get("identifier"))
        ident = identifiers[0].get("value") if identifiers else None
        field = "identifier[0].value"
    if not isinstance(ident, str):
        problems.append(Problem(field="id", code="missing_field", message="the resource has no id or identifier",
                                expected="id, or identifier[0].value"))
        return None
    if (problem := check_id(ident, field)) is not None:
        problems.append(problem)
        return None
    return ident


def _status(resource: dict[str, Any], table: dict[str, AttendanceStatus], problems: list[Problem]) -> AttendanceStatus:
    status = resource.get("status")
    if isinstance(status, str) and status in table:
        return table[status]
    problems.append(Problem(field="status", code="status_not_recorded", message=f"status is {shown(status)}",
                            expected=", ".join(table)))
    return "void"


def _version(resource: dict[str, Any], now: datetime, problems: list[Problem],
             warnings: list[Problem]) -> tuple[datetime | None, int | None]:
    meta = resource.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    recorded = kept(read_instant(meta["lastUpdated"], "meta.lastUpdated", now), problems) \
        if "lastUpdated" in meta else None
    version_id = meta.get("versionId")
    version = int(version_id) if isinstance(version_id, str) and version_id.isdigit() and len(version_id) < 19 \
        else None
    if recorded is None and version is None and "lastUpdated" not in meta:
        warnings.append(Problem(field="meta", code="unversioned",
                                message="no meta.lastUpdated or whole-number meta.versionId: the state that "
                                        "arrives last stands",
                                expected="meta.lastUpdated, so a late older state cannot replace a newer one"))
    return recorded, version


def _cancellation(resource: dict[str, Any], recorded: datetime | None, now: datetime, problems: list[Problem],
                  warnings: list[Problem], *, reason_element: bool) -> tuple[datetime | None, CancelledBy, str | None]:
    cancelled_at: datetime | None = None
    for n, ext in enumerate(_objects(resource.get("extension"))):
        if ext.get("url") == CANCELLATION_DATE:
            cancelled_at = kept(read_instant(ext.get("valueDateTime"), f"extension[{n}].valueDateTime", now),
                                problems)
            break
    else:
        if recorded is not None:
            cancelled_at = recorded
            warnings.append(Problem(field="meta.lastUpdated", code="cancelled_at_from_last_updated",
                                    message="the time of cancellation is taken from meta.lastUpdated",
                                    expected=f"the extension {CANCELLATION_DATE}"))
        else:
            warnings.append(Problem(field="extension", code="cancellation_time_unknown",
                                    message="the time of cancellation is unknown: never counted as late",
                                    expected=f"the extension {CANCELLATION_DATE}, or meta.lastUpdated"))
    if not reason_element:
        return cancelled_at, "unknown", None
    field, concept = next(((f, resource[f]) for f in ("cancelationReason", "cancellationReason") if f in resource),
                          ("cancelationReason", None))
    by: CancelledBy = "unknown"
    reason = None
    codings = _objects(concept.get("coding")) if isinstance(concept, dict) else []
    for n, coding in enumerate(codings):
        code = coding.get("code")
        if not isinstance(code, str) or not CODE_LIKE.fullmatch(code):
            problems.append(Problem(field=f"{field}.coding[{n}].code", code="invalid_code",
                                    message=f"{field}.coding[{n}].code is not a code",
                                    expected="a code of http://terminology.hl7.org/CodeSystem/appointment-cancellation-"
                                             "reason, or the clinic's own code"))
            continue
        if coding.get("system") == CANCELLATION_REASONS:
            return cancelled_at, canceller(code), code
        reason = reason or code
    return cancelled_at, by, reason


def canceller(code: str) -> CancelledBy:
    """Who called it off, from an appointment-cancellation-reason code (pat-lt: the client)."""
    if code == "pat" or code.startswith("pat-"):
        return "client"
    if code == "prov" or code.startswith("prov-") or code in ("maint", "meds-inc"):
        return "clinic"
    return "unknown"


def _appointment(resource: dict[str, Any], tenant: str, now: datetime, bundle: Bundled) -> AttendanceResult:
    problems: list[Problem] = []
    warnings: list[Problem] = []
    source: AttendanceSource = "fhir-appointment"
    appointment_id = _own_id(resource, problems)
    status = _status(resource, APPOINTMENT_STATUS, problems)
    recorded, version = _version(resource, now, problems, warnings)
    clients: dict[str, str] = {}
    clinician: str | None = None
    for n, participant in enumerate(_objects(resource.get("participant"))):
        path = f"participant[{n}].actor"
        if participant.get("actor") is None:
            continue
        scratch: list[Problem] = []
        parsed = _parse_reference(participant["actor"], path, scratch, bundle)
        if parsed is None:
            problems.extend(scratch)
            continue
        kind, ident, id_field = parsed
        if kind == "Patient":
            if (problem := check_id(ident, id_field)) is not None:
                problems.append(problem)
            else:
                clients.setdefault(ident, id_field)
        elif kind in PRACTITIONER and clinician is None:
            if (problem := check_id(ident, id_field, token=True)) is not None:
                problems.append(problem)
            else:
                clinician = ident
    if not clients and not any(p.field.startswith("participant") for p in problems):
        problems.append(Problem(field="participant", code="missing_field", message="no participant is a Patient",
                                expected='a participant with actor {"reference": "Patient/<client id>"}'))
    if len(clients) > 1:
        problems.append(Problem(field="participant", code="several_patients",
                                message=f"{len(clients)} participants are different Patients",
                                expected="one Patient participant (group sessions are not recorded yet)"))
    start = _start(resource.get("start"), "start", status, resource.get("status"), now, problems)
    cancelled_at, by, reason = (None, None, None)
    if status == "cancelled":
        cancelled_at, by, reason = _cancellation(resource, recorded, now, problems, warnings, reason_element=True)
    episode = _episode(resource, problems, bundle)
    return build(problems, appointment_id, source, tenant=tenant, client_id=next(iter(clients), None),
                 episode_id=episode, clinician_id=clinician, status=status, start=start, cancelled_at=cancelled_at,
                 cancelled_by=by, cancellation_reason=reason, recorded_at=recorded, version=version,
                 warnings=warnings)


def _start(value: Any, field: str, status: AttendanceStatus, given: Any, now: datetime,
           problems: list[Problem]) -> datetime | None:
    if value is None:
        if status not in ("cancelled", "void"):
            problems.append(Problem(field=field, code="missing_field", message=f"{field} is missing",
                                    expected=f"the start of the session, required unless cancelled "
                                             f"(status is {shown(given)})"))
        return None
    return kept(read_start(value, field, status, now), problems)


def _encounter(resource: dict[str, Any], tenant: str, now: datetime, bundle: Bundled) -> AttendanceResult:
    problems: list[Problem] = []
    warnings: list[Problem] = []
    source: AttendanceSource = "fhir-encounter"
    own = _own_id(resource, problems)
    appointment_id = None
    for n, reference in enumerate(_objects(resource.get("appointment"))[:1]):
        appointment_id = _reference_id(reference, f"appointment[{n}]", ("Appointment",), problems, bundle)
    if appointment_id is None and own is not None and not problems:
        appointment_id = f"Encounter/{own}"
        if (problem := check_id(appointment_id, "id")) is not None:
            problems.append(problem.model_copy(update={"message": "Encounter/<id> is longer than an id may be"}))
            appointment_id = None
    status = _status(resource, ENCOUNTER_STATUS, problems)
    recorded, version = _version(resource, now, problems, warnings)
    client = _subject(resource, problems, bundle)
    clinician: str | None = None
    for n, participant in enumerate(_objects(resource.get("participant"))):
        individual = participant.get("individual")
        if individual is None:
            continue
        scratch: list[Problem] = []
        parsed = _parse_reference(individual, f"participant[{n}].individual", scratch, bundle)
        if parsed is not None and parsed[0] in PRACTITIONER:
            clinician = _reference_id(individual, f"participant[{n}].individual", PRACTITIONER, problems, bundle,
                                      token=True)
            break
    period = resource.get("period")
    start = _start(period.get("start") if isinstance(period, dict) else None, "period.start", status,
                   resource.get("status"), now, problems)
    cancelled_at, by = (None, None)
    if status == "cancelled":
        cancelled_at, by, _ = _cancellation(resource, recorded, now, problems, warnings, reason_element=False)
    episode = _episode(resource, problems, bundle)
    if episode is None:
        for n, reference in enumerate(_objects(resource.get("episodeOfCare"))[:1]):
            episode = _reference_id(reference, f"episodeOfCare[{n}]", ("EpisodeOfCare",), problems, bundle)
    return build(problems, appointment_id or readable_id(own), source, tenant=tenant, client_id=client,
                 episode_id=episode, clinician_id=clinician, status=status, start=start, cancelled_at=cancelled_at,
                 cancelled_by=by, recorded_at=recorded, version=version, warnings=warnings)


def _episode_of_care(resource: dict[str, Any], tenant: str, now: datetime, bundle: Bundled) -> AttendanceResult:
    """An EpisodeOfCare finished (an ending the clinic recorded: planned) or cancelled (withdrawn:
    unplanned); the extension ENDING_EXTENSION (valueCode planned or unplanned) says otherwise where the
    clinic records it. `period.end` is when it ended (else meta.lastUpdated, with a warning)."""
    problems: list[Problem] = []
    warnings: list[Problem] = []
    source: AttendanceSource = "fhir-episode-of-care"
    episode = _own_id(resource, problems)
    status = resource.get("status")
    ending = EPISODE_ENDINGS.get(status) if isinstance(status, str) else None
    if ending is None:
        problems.append(Problem(field="status", code="status_not_recorded", message=f"status is {shown(status)}",
                                expected="finished or cancelled (an episode's ending)"))
    for n, ext in enumerate(_objects(resource.get("extension"))):
        if ext.get("url") == ENDING_EXTENSION:
            code = ext.get("valueCode")
            if code in ("planned", "unplanned"):
                ending = "planned" if code == "planned" else "unplanned"
            else:
                problems.append(Problem(field=f"extension[{n}].valueCode", code="invalid_code",
                                        message=f"extension[{n}].valueCode is {shown(code)}",
                                        expected="planned or unplanned"))
    recorded, version = _version(resource, now, problems, warnings)
    if resource.get("patient") is None:
        problems.append(Problem(field="patient", code="missing_field", message="patient is missing",
                                expected='{"reference": "Patient/<client id>"}'))
        client = None
    else:
        client = _reference_id(resource["patient"], "patient", ("Patient",), problems, bundle)
    period = resource.get("period")
    end = period.get("end") if isinstance(period, dict) else None
    ended_at = kept(read_instant(end, "period.end", now), problems) if end is not None else recorded
    if end is None and recorded is not None:
        warnings.append(Problem(field="period.end", code="ended_at_from_last_updated",
                                message="the time of the ending is taken from meta.lastUpdated",
                                expected="period.end"))
    elif end is None:
        problems.append(Problem(field="period.end", code="missing_field", message="period.end is missing",
                                expected="when the episode ended, or meta.lastUpdated"))
    return build(problems, None, source, tenant=tenant, client_id=client, episode_id=episode, ending=ending,
                 ended_at=ended_at, recorded_at=recorded, version=version, warnings=warnings)
