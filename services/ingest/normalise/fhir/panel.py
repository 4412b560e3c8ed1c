"""An Observation panel and its members: one item-level submission, as EHRs export a screening.

A panel Observation carries an instrument's LOINC panel code (PHQ-9 44249-1, GAD-7 69737-5) and
`hasMember` references to item Observations in the same Bundle, each coded with an item's LOINC code and
answered by `valueCodeableConcept` (weighed as a QuestionnaireResponse answer coding is: an itemWeight or
ordinalValue extension on the coding, the item's LOINC answer codes, a numeric code or display),
`valueInteger`, `valueQuantity` or a numeric `valueString`. A member coded with the instrument's total
code is the stated total (compared, never scored; a numeric string is read with a warning); the
difficulty item (PHQ-9 69722-7) is kept unscored. A member with a data-absent-reason and no value is asked
and declined (None). The panel gives the header (status, subject, time, performer, episode); a member
naming another patient is refused. The members get no answer of their own: the panel's answer covers
them. Problems name the member's own entry (`entry[3].resource.valueCodeableConcept`).
"""

from __future__ import annotations

from typing import Any

from rapport.services.ingest.normalise.fhir.answers import DATA_ABSENT, ItemNames, _Responses
from rapport.services.ingest.normalise.fhir.context import Context, Invalid, _objects, _submission, read_status
from rapport.services.ingest.normalise.fhir.observation import (
    FINAL_OBSERVATION,
    _observation_id,
    _observation_value,
    _observed_at,
    _performer,
    _relative,
)
from rapport.services.ingest.normalise.fhir.references import _episode, _reference_id, _subject
from rapport.services.ingest.normalise.fhir.response import _submission_id, _temporary_id
from rapport.services.ingest.normalise.outcome import Draft, Rejection, StatedTotal
from rapport.services.ingest.normalise.reading import shown
from rapport.shared.contracts.problems import Problem
from rapport.shared.instruments import Instrument

VALUES = ("valueCodeableConcept", "valueInteger", "valueQuantity", "valueString", "valueBoolean",
          "valueDateTime", "valuePeriod", "valueRatio", "valueSampledData", "valueTime", "valueRange")


def member_entries(resource: dict[str, Any], context: Context) -> list[int | None]:
    """The Bundle entry index each hasMember names (None where it names no entry)."""
    found: list[int | None] = []
    for member in _objects(resource.get("hasMember")):
        reference = member.get("reference")
        index = None
        if isinstance(reference, str):
            reference = reference.strip()
            index = context.observations.get(reference)
            if index is None and not reference.startswith("urn:"):
                index = context.observations.get(_relative(reference))
        found.append(index)
    return found


def assemble_panel(n: int, panel: dict[str, Any], instrument: Instrument, entries: list[Any],
                   context: Context, full_url: str | None) -> Draft | Rejection:
    prefix = f"entry[{n}].resource." if entries else ""
    local: list[Problem] = []  # fields relative to the panel, prefixed at the end
    problems: list[Problem] = []  # fields already absolute (the members' own entries)
    warnings = list(_temporary_id(panel, full_url))
    status = read_status(panel, FINAL_OBSERVATION, local)
    client = _subject(panel, local, context.full_urls)
    _submission_id(panel, local, full_url)
    observed = _observed_at(panel, context.now)
    if isinstance(observed, Problem):
        local.append(observed)
    clinician = _performer(panel, local, context)
    episode = _episode(panel, local, context.full_urls)
    reading = _Responses(instrument, context.mapping, {})
    names = ItemNames(instrument, context.mapping)
    stated: StatedTotal | None = None
    where: dict[int, str] = {}
    for k, index in enumerate(member_entries(panel, context)):
        if index is None:
            local.append(Problem(
                field=f"hasMember[{k}]", code="unresolved_reference",
                message=f"hasMember[{k}] names no Observation entry of this Bundle" if entries
                else f"hasMember[{k}] cannot be resolved: this panel was not sent in a Bundle",
                expected="the item Observations as entries of the same Bundle, referenced by fullUrl or "
                         "Observation/<id>"))
            continue
        member = entries[index]["resource"]
        here = f"entry[{index}].resource"
        member_problems: list[Problem] = []
        read_status(member, FINAL_OBSERVATION, member_problems)
        if member.get("subject") is not None and client is not None:
            other = _reference_id(member.get("subject"), "subject", ("Patient",), member_problems,
                                  context.full_urls)
            if other is not None and other != client:
                member_problems.append(Problem(field="subject", code="subject_mismatch",
                                               message="this member Observation names another patient than its panel",
                                               expected="the panel's subject, or no subject"))
        problems += [p.model_copy(update={"field": f"{here}.{p.field}"}) for p in member_problems]
        codes = [c["code"] for c in _objects((member.get("code") or {}).get("coding")
                                             if isinstance(member.get("code"), dict) else None)
                 if isinstance(c.get("code"), str)]
        if any(names.total_code == code for code in codes):
            stated_problems: list[Problem] = []  # an unreadable stated total is as good as none
            read_as: list[Problem] = []
            value = _observation_value(member, stated_problems, read_as)
            if value is not None and not stated_problems and stated is None:
                stated = StatedTotal(f"{here}.value", value)
                warnings += [w.model_copy(update={"field": f"{here}.{w.field}"}) for w in read_as]
            continue
        number = next((named.number for code in codes if (named := names.name(code, {})) is not None
                       and named.how in ("LOINC code", "tenant map", "alias")), None)
        if number is None:
            problems.append(Problem(
                field=f"{here}.code.coding", code="unmapped_code",
                message=f"hasMember[{k}] is coded {', '.join(shown(c) for c in codes[:3]) or 'with no code'}, "
                        f"which is not an item of {instrument.id}",
                expected=f"the LOINC code of a {instrument.id} item: "
                         + ", ".join(f"{i.loinc} (item {i.number})" for i in instrument.items if i.loinc)))
            continue
        if number in where:
            problems.append(Problem(field=f"{here}.code.coding", code="duplicate_item",
                                    message=f"{instrument.id} item {number} is answered twice ({where[number]} "
                                            f"and {here})", expected="each item once"))
            continue
        where[number] = here
        value_problems: list[Problem] = []
        value = _member_value(member, here, number, reading, value_problems)
        definition = instrument.item(number)
        if value_problems and definition is not None and not definition.scored:
            warnings.append(Problem(field=here, code="unscored_item_ignored",
                                    message=f"{instrument.id} item {number} is not scored and its answer could "
                                            "not be weighed; it is left out"))
            continue
        problems += value_problems
        if not value_problems:
            reading.responses[number] = value
    problems = [p.model_copy(update={"field": prefix + p.field}) for p in local] + problems
    submission_id = _observation_id(panel, context.full_urls, full_url)
    if problems or isinstance(observed, Problem):
        return Rejection(submission_id=submission_id, source_format="fhir-observation", problems=problems,
                         instrument=instrument.id)
    assert client is not None and submission_id is not None
    try:
        submission = _submission(
            instrument, tenant=context.tenant, submission_id=submission_id, client_id=client, episode_id=episode,
            clinician_id=clinician, administered_at=observed, responses=reading.responses,
            amends=status in ("amended", "corrected"), source_format="fhir-observation", warnings=warnings)
    except Invalid as invalid:
        return Rejection(submission_id=submission_id, source_format="fhir-observation",
                         problems=invalid.problems, instrument=instrument.id)
    return Draft(submission, stated)


def _member_value(member: dict[str, Any], here: str, number: int, reading: _Responses,
                  problems: list[Problem]) -> float | None:
    keys = [k for k in VALUES if k in member]
    if not keys:
        if isinstance(member.get("dataAbsentReason"), dict) or any(
                e.get("url") == DATA_ABSENT for e in _objects(member.get("extension"))):
            return None  # asked and declined: the missing-item rule decides
        problems.append(Problem(field=f"{here}.value[x]", code="missing_field",
                                message=f"the Observation for item {number} has no value",
                                expected="valueCodeableConcept, valueInteger, valueQuantity, or a dataAbsentReason"))
        return None
    key = keys[0]
    if key != "valueCodeableConcept":
        answer = {"valueInteger" if key == "valueInteger" else key: member[key]}
        return reading._value(answer, here, "", number, problems)
    concept = member[key]
    codings = _objects(concept.get("coding")) if isinstance(concept, dict) else []
    if not codings:
        problems.append(Problem(field=f"{here}.{key}.coding", code="missing_field",
                                message=f"the Observation for item {number} has no coded answer",
                                expected="a coding with a LOINC answer code or an ordinalValue extension"))
        return None
    first: list[Problem] = []
    for c, coding in enumerate(codings):  # the first coding Rapport can weigh: EHRs add local codings beside LOINC
        scratch: list[Problem] = []
        value = reading._coding(coding, {}, f"{here}.{key}.coding[{c}]", "", number, scratch)
        if not scratch:
            return value
        first = first or scratch
    problems += first
    return None
