"""FHIR R4 QuestionnaireResponse, Bundle and total-score Observation, as real EHRs send them.

Instrument: the `questionnaire` canonical (with or without `|version`), a canonical ending in the
LOINC panel code, the registry's known canonicals, or the tenant's configured map.

linkId -> item number, first match wins:
1. the tenant's configured map for the instrument (descriptive names, opaque ids);
2. the item's LOINC code, with or without a leading slash ("44250-9", "/44250-9");
3. the item's aliases in the registry;
4. a positional name ending in the item number: "1", "q1", "item1", "g1.q1", "phq9-1", "PHQ.1".
Items nest (groups, answers with sub-items): all levels are read.

Answer value: valueInteger, valueDecimal, a numeric valueString, or valueCoding weighed by, in order,
an itemWeight (or older ordinalValue) extension on the coding or the answer, the contained
Questionnaire's answerOption weight for that item, the instrument's LOINC answer codes, a code that
is a number, a display that is a number. Weights belong to the item, never to a code in general.

An item asked and declined (no answer, or a data-absent-reason extension) counts as missing; the
instrument's missing-item rule decides. A total-score item is never trusted: it is dropped, and a
total that disagrees with the responses is reported as a warning. Episode: `basedOn`
EpisodeOfCare/<id>, or the extension http://rapport.dev/fhir/StructureDefinition/episode.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from services.ingest.normalise.outcome import Rejection, TenantMapping
from shared.contracts.problems import Problem
from shared.contracts.submission import SourceFormat, Submission
from shared.contracts.tenancy import ID_PATTERN
from shared.instruments import Instrument, Registry

ITEM_WEIGHT = "http://hl7.org/fhir/StructureDefinition/itemWeight"
ORDINAL_VALUE = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
EPISODE_EXTENSION = "http://rapport.dev/fhir/StructureDefinition/episode"
FINAL_QR = {"completed", "amended"}
FINAL_OBSERVATION = {"final", "amended", "corrected"}
POSITIONAL = re.compile(r"(?:^|\D)(\d{1,3})$")
TOTAL_NAMES = re.compile(r"(total|score|sum)", re.IGNORECASE)
SUBJECT_TOKEN = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
_aware = TypeAdapter(datetime)


class Invalid(Exception):
    def __init__(self, *problems: Problem) -> None:
        self.problems = list(problems)


def normalise_fhir(document: dict[str, Any], tenant: str, registry: Registry,
                   mapping: TenantMapping) -> list[Submission | Rejection]:
    kind = document.get("resourceType")
    if kind == "Bundle":
        entries = document.get("entry")
        if not isinstance(entries, list) or not entries:
            return [Rejection.of(Problem(field="entry", code="empty_bundle", message="the Bundle has no entries",
                                         expected="entries whose resource is a QuestionnaireResponse"))]
        results: list[Submission | Rejection] = []
        for n, entry in enumerate(entries):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict):
                results.append(Rejection.of(Problem(field=f"entry[{n}].resource", code="missing_field",
                                                    message=f"entry {n} has no resource")))
                continue
            results.append(_one(resource, tenant, registry, mapping, prefix=f"entry[{n}]."))
        return results
    return [_one(document, tenant, registry, mapping, prefix="")]


def _one(resource: dict[str, Any], tenant: str, registry: Registry, mapping: TenantMapping,
         prefix: str) -> Submission | Rejection:
    kind = resource.get("resourceType")
    source: SourceFormat = "fhir-observation" if kind == "Observation" else "fhir-questionnaire-response"
    submission_id = resource.get("id") if isinstance(resource.get("id"), str) else None
    try:
        if kind == "QuestionnaireResponse":
            return _questionnaire_response(resource, tenant, registry, mapping)
        if kind == "Observation":
            return _observation(resource, tenant, registry)
        raise Invalid(Problem(
            field="resourceType", code="unsupported_resource",
            message=f"resourceType {str(kind)[:40]!r} is not accepted",
            expected="QuestionnaireResponse, a Bundle of them, or an Observation with a LOINC total-score code",
        ))
    except Invalid as invalid:
        problems = [p.model_copy(update={"field": prefix + p.field}) for p in invalid.problems]
        return Rejection(submission_id=submission_id, source_format=source, problems=problems)


def _reference_id(value: Any, field: str, expected_types: tuple[str, ...]) -> str:
    if not isinstance(value, dict) or not isinstance(value.get("reference"), str):
        raise Invalid(Problem(field=field, code="missing_field", message=f"{field} has no reference",
                              expected=f"{{'reference': '{expected_types[0]}/<id>'}}"))
    kind, _, ident = value["reference"].rstrip("/").rpartition("/")
    if kind.rsplit("/", 1)[-1] not in expected_types or not ident:
        raise Invalid(Problem(field=f"{field}.reference", code="invalid_reference",
                              message=f"{field} does not reference a {' or '.join(expected_types)}",
                              expected=f"{expected_types[0]}/<id>"))
    return str(ident)


def _checked_id(value: str, field: str, pattern: re.Pattern[str] = ID_PATTERN) -> str:
    if not pattern.fullmatch(value):
        raise Invalid(Problem(field=field, code="invalid_id", message=f"{field} has characters ids cannot have",
                              expected=f"an id matching {pattern.pattern}"))
    return value


def _datetime(value: Any, field: str) -> datetime:
    if not isinstance(value, str) or "T" not in value:
        raise Invalid(Problem(field=field, code="invalid_datetime",
                              message=f"{field} is not a date and time (a date alone is not enough)",
                              expected="an ISO-8601 dateTime with a UTC offset, e.g. 2026-03-02T10:15:00+00:00"))
    try:
        parsed = _aware.validate_python(value)
    except ValidationError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise Invalid(Problem(field=field, code="invalid_datetime", message=f"{field} has no valid UTC offset",
                              expected="an ISO-8601 dateTime with a UTC offset"))
    return parsed


def _instrument(resource: dict[str, Any], registry: Registry, mapping: TenantMapping) -> Instrument:
    canonical = resource.get("questionnaire")
    if isinstance(canonical, dict):
        raise Invalid(Problem(field="questionnaire", code="not_fhir_r4",
                              message="questionnaire is a Reference (FHIR STU3); R4 uses a canonical URL string",
                              expected="a canonical URL such as http://loinc.org/q/44249-1"))
    if not isinstance(canonical, str) or not canonical:
        raise Invalid(Problem(field="questionnaire", code="missing_field", message="questionnaire is missing",
                              expected="the Questionnaire's canonical URL"))
    bare = canonical.split("|", 1)[0]
    mapped = mapping.questionnaires.get(canonical) or mapping.questionnaires.get(bare)
    instrument = (registry.get(mapped) if mapped else None) or registry.by_questionnaire(bare) \
        or registry.by_questionnaire(bare.rstrip("/").rsplit("/", 1)[-1])
    if instrument is None:
        raise Invalid(Problem(field="questionnaire", code="unknown_instrument",
                              message="the questionnaire is not one Rapport knows",
                              expected="a LOINC panel canonical (e.g. http://loinc.org/q/44249-1) or one "
                                       "configured for this tenant"))
    return instrument


def _items(items: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if items is None:
        return
    if not isinstance(items, list):
        raise Invalid(Problem(field=path, code="invalid_fhir", message=f"{path} is not a list", expected="a list"))
    for n, item in enumerate(items):
        here = f"{path}[{n}]"
        if not isinstance(item, dict):
            raise Invalid(Problem(field=here, code="invalid_fhir", message=f"{here} is not an object"))
        yield here, item
        yield from _items(item.get("item"), f"{here}.item")
        for a, answer in enumerate(item.get("answer") or []):
            if isinstance(answer, dict):
                yield from _items(answer.get("item"), f"{here}.answer[{a}].item")


def _item_number(link_id: str, instrument: Instrument, mapping: TenantMapping) -> int | None:
    configured = mapping.link_ids.get(instrument.id, {})
    if link_id in configured:
        return configured[link_id]
    code = link_id.lstrip("/")
    for item in instrument.items:
        if item.loinc == code or link_id in item.aliases:
            return item.number
    if code == instrument.coding.loinc_total:
        return None
    match = POSITIONAL.search(link_id)
    if match and not TOTAL_NAMES.search(link_id):
        number = int(match.group(1))
        return number if 1 <= number <= len(instrument.items) else None
    return None


def _extension_number(holder: dict[str, Any]) -> float | None:
    for ext in holder.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") in (ITEM_WEIGHT, ORDINAL_VALUE):
            for key in ("valueDecimal", "valueInteger"):
                if isinstance(ext.get(key), int | float):
                    return float(ext[key])
    return None


def _declined(holder: dict[str, Any]) -> bool:
    return any(isinstance(e, dict) and e.get("url") == DATA_ABSENT for e in holder.get("extension") or [])


def _option_weights(resource: dict[str, Any]) -> dict[str, dict[str, float]]:
    """linkId -> {answer code -> weight} from a contained Questionnaire's answerOptions."""
    weights: dict[str, dict[str, float]] = {}
    for contained in resource.get("contained") or []:
        if not isinstance(contained, dict) or contained.get("resourceType") != "Questionnaire":
            continue
        for _path, item in _items(contained.get("item"), "contained.item"):
            for option in item.get("answerOption") or []:
                coding = option.get("valueCoding") if isinstance(option, dict) else None
                if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                    weight = _extension_number(coding)
                    weight = weight if weight is not None else _extension_number(option)
                    if weight is not None:
                        weights.setdefault(str(item.get("linkId")), {})[coding["code"]] = weight
    return weights


def _value(answer: dict[str, Any], field: str, link_id: str, instrument: Instrument,
           option_weights: dict[str, dict[str, float]]) -> float | None:
    if _declined(answer):
        return None
    for key in ("valueInteger", "valueDecimal"):
        if key in answer:
            if isinstance(answer[key], bool) or not isinstance(answer[key], int | float):
                raise Invalid(Problem(field=f"{field}.{key}", code="invalid_fhir",
                                      message=f"{key} is not a number", expected="a number"))
            return float(answer[key])
    if "valueString" in answer:
        try:
            return float(str(answer["valueString"]).strip())
        except ValueError:
            raise Invalid(Problem(field=f"{field}.valueString", code="not_a_number",
                                  message="valueString is not a number", expected="a numeric answer")) from None
    coding = answer.get("valueCoding")
    if isinstance(coding, dict):
        for weight in (_extension_number(coding), _extension_number(answer)):
            if weight is not None:
                return weight
        code = coding.get("code")
        if isinstance(code, str):
            if code in option_weights.get(link_id, {}):
                return option_weights[link_id][code]
            if code in instrument.coding.answer_codes:
                return instrument.coding.answer_codes[code]
        for text in (code, coding.get("display")):
            if isinstance(text, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", text):
                return float(text)
        raise Invalid(Problem(
            field=f"{field}.valueCoding", code="unscorable_answer",
            message=f"the answer code {str(code)[:20]!r} has no weight for item {link_id[:40]!r}",
            expected="an itemWeight extension, a contained Questionnaire with weights, or a LOINC answer code",
        ))
    present = [k for k in answer if k.startswith("value")]
    raise Invalid(Problem(field=field, code="unscorable_answer",
                          message=f"answer of type {present[0] if present else 'none'} cannot be scored",
                          expected="valueInteger, valueDecimal, numeric valueString or valueCoding"))


def _episode(resource: dict[str, Any]) -> str | None:
    for ext in resource.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == EPISODE_EXTENSION:
            value = ext.get("valueString") or (ext.get("valueReference") or {}).get("reference", "")
            return _checked_id(str(value).rsplit("/", 1)[-1], "extension[episode]")
    for n, based in enumerate(resource.get("basedOn") or []):
        reference = based.get("reference", "") if isinstance(based, dict) else ""
        if reference.startswith("EpisodeOfCare/"):
            return _checked_id(reference.split("/", 1)[1], f"basedOn[{n}].reference")
    return None


def _questionnaire_response(resource: dict[str, Any], tenant: str, registry: Registry,
                            mapping: TenantMapping) -> Submission:
    ident = resource.get("id") or ((resource.get("identifier") or {}).get("value"))
    if not isinstance(ident, str):
        raise Invalid(Problem(field="id", code="missing_field", message="the QuestionnaireResponse has no id",
                              expected="id (or identifier.value), unique per tenant"))
    submission_id = _checked_id(ident, "id")
    status = resource.get("status")
    if status not in FINAL_QR:
        raise Invalid(Problem(field="status", code="status_not_final",
                              message=f"status is {str(status)[:20]!r}", expected="completed or amended"))
    instrument = _instrument(resource, registry, mapping)
    client = _checked_id(_reference_id(resource.get("subject"), "subject", ("Patient",)), "subject.reference")
    clinician = None
    if resource.get("author") is not None:
        clinician = _checked_id(
            _reference_id(resource["author"], "author", ("Practitioner", "PractitionerRole")),
            "author.reference", SUBJECT_TOKEN)
    authored = _datetime(resource.get("authored"), "authored")
    weights = _option_weights(resource)
    responses: dict[int, float | None] = {}
    stated_total: float | None = None
    problems: list[Problem] = []
    for path, item in _items(resource.get("item"), "item"):
        link_id = item.get("linkId")
        answers = item.get("answer")
        if not isinstance(link_id, str):
            problems.append(Problem(field=f"{path}.linkId", code="missing_field", message="an item has no linkId"))
            continue
        number = _item_number(link_id, instrument, mapping)
        if not answers:
            if number is not None:
                responses[number] = None  # asked, declined or left blank
            continue
        if number is None:
            if link_id.lstrip("/") == instrument.coding.loinc_total or TOTAL_NAMES.search(link_id):
                with contextlib.suppress(Invalid):  # an unreadable stated total is as good as none
                    stated_total = _value(answers[0], f"{path}.answer[0]", link_id, instrument, weights)
                continue
            if item.get("item") and not item.get("answer"):
                continue
            problems.append(Problem(
                field=f"{path}.linkId", code="unmapped_link_id",
                message=f"linkId {link_id[:60]!r} is not an item of {instrument.id}",
                expected="LOINC item codes, positional names (q1, phq9-1), or a linkId map for this tenant",
            ))
            continue
        if len(answers) > 1:
            problems.append(Problem(field=f"{path}.answer", code="several_answers",
                                    message=f"item {number} has {len(answers)} answers", expected="one answer"))
            continue
        try:
            responses[number] = _value(answers[0], f"{path}.answer[0]", link_id, instrument, weights)
        except Invalid as invalid:
            problems += invalid.problems
    if problems:
        raise Invalid(*problems)
    return Submission(
        tenant=tenant, submission_id=submission_id, instrument=instrument.id, client_id=client,
        episode_id=_episode(resource), clinician_id=clinician, administered_at=authored, responses=responses,
        amends=status == "amended", source_format="fhir-questionnaire-response",
        warnings=_total_warning(instrument, responses, stated_total),
    )


def _total_warning(instrument: Instrument, responses: dict[int, float | None],
                   stated: float | None) -> list[Problem]:
    if stated is None:
        return []
    scored = instrument.scored_items
    simple = instrument.scoring.method == "sum" and not any(i.reverse for i in scored)
    values = [responses.get(i.number) for i in scored]
    if simple and all(v is not None for v in values):
        computed = sum(v for v in values if v is not None) * instrument.scoring.multiplier
        if abs(computed - stated) > 1e-6:
            return [Problem(field="item[total]", code="total_mismatch",
                            message=f"the stated total {stated:g} differs from the items' total {computed:g}; "
                                    "the items' total is used", expected=f"{computed:g}")]
        return []
    return [Problem(field="item[total]", code="stated_total_ignored",
                    message="the stated total is ignored; the score is computed from the items")]


def _observation(resource: dict[str, Any], tenant: str, registry: Registry) -> Submission:
    codings = (resource.get("code") or {}).get("coding") or []
    instrument = next((i for c in codings if isinstance(c, dict)
                       and (i := registry.by_total_code(str(c.get("code"))))), None)
    if instrument is None:
        raise Invalid(Problem(field="code.coding", code="unknown_instrument",
                              message="the Observation's code is not a known instrument total score",
                              expected="a LOINC total-score code such as 44261-6 (PHQ-9) or 70274-6 (GAD-7)"))
    status = resource.get("status")
    if status not in FINAL_OBSERVATION:
        raise Invalid(Problem(field="status", code="status_not_final", message=f"status is {str(status)[:20]!r}",
                              expected="final, amended or corrected"))
    quantity = resource.get("valueQuantity")
    value = quantity.get("value") if isinstance(quantity, dict) else resource.get("valueInteger",
                                                                                  resource.get("valueDecimal"))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(Problem(field="valueQuantity.value", code="not_a_number", message="the total is not a number",
                              expected="valueQuantity.value or valueInteger"))
    client = _checked_id(_reference_id(resource.get("subject"), "subject", ("Patient",)), "subject.reference")
    when = resource.get("effectiveDateTime") or resource.get("effectiveInstant") or resource.get("issued")
    observed = _datetime(when, "effectiveDateTime")
    ident = resource.get("id")
    if not isinstance(ident, str):
        raise Invalid(Problem(field="id", code="missing_field", message="the Observation has no id"))
    # Observation ids repeat across patients in real feeds: the submission id includes the patient.
    submission_id = f"obs:{client}:{ident}"
    if not ID_PATTERN.fullmatch(submission_id):
        submission_id = "obs:" + hashlib.sha256(f"{client}\x00{ident}".encode()).hexdigest()[:40]
    return Submission(
        tenant=tenant, submission_id=submission_id, instrument=instrument.id, client_id=client,
        episode_id=_episode(resource), administered_at=observed, reported_total=float(value), item_level=False,
        amends=status in ("amended", "corrected"), source_format="fhir-observation",
    )
