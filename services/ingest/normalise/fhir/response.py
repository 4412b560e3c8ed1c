"""A QuestionnaireResponse: its submission id (shared with the Observation), header and instrument."""

from __future__ import annotations

import re
from typing import Any

from rapport.services.ingest.normalise.fhir.answers import _option_weights, _Responses
from rapport.services.ingest.normalise.fhir.context import (
    LOINC_CODE,
    Context,
    Invalid,
    _objects,
    _submission,
    read_status,
)
from rapport.services.ingest.normalise.fhir.inference import infer, number_ranges, shown_link_id
from rapport.services.ingest.normalise.fhir.references import _clinician, _episode, _subject
from rapport.services.ingest.normalise.outcome import (
    MAX_PROBLEMS,
    Draft,
    QuestionnaireMap,
    TenantMapping,
    find_form,
)
from rapport.services.ingest.normalise.reading import check_id, read_instant, readable_id, shown
from rapport.shared.contracts.problems import Problem
from rapport.shared.instruments import Instrument

FINAL_QR = ("completed", "amended")
URN_UUID = re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


def _stated_id(resource: dict[str, Any]) -> tuple[Any, str]:
    """The resource's own id, else its identifier's value (a list in R5 and some R4 senders), and its path."""
    ident, path = resource.get("id"), "id"
    if ident is None:
        identifier, path = resource.get("identifier"), "identifier.value"
        if isinstance(identifier, list):
            identifier, path = next(iter(_objects(identifier)), None), "identifier[0].value"
        ident = identifier.get("value") if isinstance(identifier, dict) else None
    return ident, path


def _entry_urn(resource: dict[str, Any], full_url: str | None) -> str | None:
    """The Bundle entry's `urn:uuid:` fullUrl, when the resource states no id or identifier of its own (a
    transaction entry the server is to create). It stands in as the submission id, the whole urn as sent."""
    if _stated_id(resource)[0] is None and full_url is not None and URN_UUID.fullmatch(full_url):
        return full_url
    return None


def _temporary_id(resource: dict[str, Any], full_url: str | None) -> list[Problem]:
    if _entry_urn(resource, full_url) is None:
        return []
    return [Problem(
        field="id", code="temporary_submission_id",
        message="the resource has no id or identifier, so its Bundle entry's urn:uuid fullUrl is the submission id: "
                "a resend with the same fullUrl is recognised, one under a new urn:uuid counts as a new submission "
                "(FHIR makes a urn:uuid fullUrl valid only within its Bundle)",
        expected="id or identifier.value, unique per tenant")]


def _response_id(resource: dict[str, Any], full_url: str | None) -> str | None:
    return _entry_urn(resource, full_url) or readable_id(_stated_id(resource)[0])


def _submission_id(resource: dict[str, Any], problems: list[Problem], full_url: str | None) -> str | None:
    if (urn := _entry_urn(resource, full_url)) is not None:
        return urn
    ident, path = _stated_id(resource)
    if ident is None:
        problems.append(Problem(field="id", code="missing_field", message="the resource has no id",
                                expected="id (or identifier.value), unique per tenant"))
        return None
    if not isinstance(ident, str):
        problems.append(Problem(field=path, code="invalid_fhir", message=f"{path} is not a string"))
        return None
    if (problem := check_id(ident, path)) is not None:
        problems.append(problem)
        return None
    return ident


def _questionnaire_response(resource: dict[str, Any], context: Context, full_url: str | None) -> Draft:
    problems: list[Problem] = []
    submission_id = _submission_id(resource, problems, full_url)
    status = read_status(resource, FINAL_QR, problems)
    warnings: list[Problem] = []
    instrument, definitions, form = _instrument(resource, context, problems, warnings)
    client = _subject(resource, problems, context.full_urls)
    clinician = _clinician(resource.get("author"), "author", problems, context.full_urls)
    authored = read_instant(resource.get("authored"), "authored", context.now)
    if isinstance(authored, Problem):
        problems.append(authored)
    episode = _episode(resource, problems, context.full_urls)
    reading = None
    if instrument is not None:
        mapping, weights = _with_form(context.mapping, form, _option_weights(definitions))
        reading = _Responses(instrument, mapping, weights, form.displays if form is not None else None)
        reading.walk(resource.get("item"), "item", 0)
        problems += reading.problems
        if reading.unread and len(problems) < MAX_PROBLEMS:  # beyond that the rejection is cut anyway
            problems.append(_what_was_read(instrument, reading))
    if problems or reading is None or isinstance(authored, Problem):
        raise Invalid(problems, instrument)
    assert submission_id is not None and client is not None and instrument is not None
    submission = _submission(
        instrument, tenant=context.tenant, submission_id=submission_id, client_id=client,
        episode_id=episode, clinician_id=clinician, administered_at=authored, responses=reading.responses,
        amends=status == "amended", source_format="fhir-questionnaire-response",
        warnings=[*warnings, *_temporary_id(resource, full_url), *reading.warnings],
    )
    return Draft(submission, reading.stated_total)


Found = tuple[Instrument | None, list[dict[str, Any]], QuestionnaireMap | None]


def _with_form(mapping: TenantMapping, form: QuestionnaireMap | None,
               weights: dict[str, dict[str, float]]) -> tuple[TenantMapping, dict[str, dict[str, float]]]:
    """The mapping and answer weights one response is read with: its Questionnaire's linkIds before the
    tenant's general linkId map; weights a contained or bundled Questionnaire states before the form's."""
    if form is None:
        return mapping, weights
    link_ids = {**mapping.link_ids, form.instrument: {**mapping.link_ids.get(form.instrument, {}), **form.link_ids}}
    totals = {**mapping.total_link_ids, form.instrument: form.total_link_ids}
    return TenantMapping(mapping.questionnaires, link_ids, mapping.forms, totals), {**form.weights, **weights}


def _instrument(resource: dict[str, Any], context: Context, problems: list[Problem],
                warnings: list[Problem]) -> Found:
    """The instrument, the Questionnaire definitions at hand (contained or bundled) for weights, and the
    catalogued or imported Questionnaire it names, if any; when no canonical, contained Questionnaire or
    tag names it, inferred from the items (fhir/inference.py)."""
    canonical = resource.get("questionnaire")
    contained = [c for c in _objects(resource.get("contained")) if c.get("resourceType") == "Questionnaire"]
    if isinstance(canonical, dict):
        problems.append(Problem(field="questionnaire", code="not_fhir_r4",
                                message="questionnaire is a Reference object (FHIR STU3); R4 uses a canonical URL",
                                expected="a canonical URL string such as http://loinc.org/q/44249-1"))
        return None, contained, None
    if canonical is not None and not isinstance(canonical, str):
        problems.append(Problem(field="questionnaire", code="invalid_fhir", message="questionnaire is not a string",
                                expected="a canonical URL string such as http://loinc.org/q/44249-1"))
        return None, contained, None
    keys: list[str] = []
    definitions = list(contained)
    if canonical:
        if canonical.startswith("#"):
            target = [c for c in contained if c.get("id") == canonical[1:]]
            definitions = target or contained
            keys += [k for c in target for k in _definition_keys(c)]
        else:
            keys.append(canonical)
            bundled = context.definitions.get(canonical.split("|", 1)[0])
            if bundled is not None:
                definitions.append(bundled)
                keys += _definition_keys(bundled)
    meta = resource.get("meta")
    for tag in _objects(meta.get("tag")) if isinstance(meta, dict) else []:
        if isinstance(tag.get("code"), str):
            if isinstance(tag.get("system"), str):
                keys.append(f"{tag['system']}|{tag['code']}")
            keys.append(tag["code"])
    for key in keys:
        found = _resolve(key, context)
        if isinstance(found, Problem):
            problems.append(found)
            return None, definitions, None
        if found[0] is not None:
            return found[0], definitions, found[1]
    # Unknown or absent (R4 makes `questionnaire` optional): the items may still say which instrument it is.
    inference = infer(resource.get("item"), context.registry, context.mapping, canonical or None)
    if inference.instrument is None:
        problems.extend(inference.problems)
    else:
        warnings.extend(inference.problems)
    return inference.instrument, definitions, None


def _definition_keys(questionnaire: dict[str, Any]) -> list[str]:
    keys = [questionnaire["url"]] if isinstance(questionnaire.get("url"), str) else []
    keys += [i["value"] for i in _objects(questionnaire.get("identifier")) if isinstance(i.get("value"), str)]
    keys += [c["code"] for c in _objects(questionnaire.get("code")) if isinstance(c.get("code"), str)]
    return keys


def _resolve(key: str, context: Context) -> tuple[Instrument | None, QuestionnaireMap | None] | Problem:
    """In order: this tenant's imported Questionnaires, its questionnaire map, the published catalogue
    (fhir/catalogue.py), the registry's canonicals and LOINC panel codes."""
    bare = key.split("|", 1)[0]
    tenant_form = find_form(context.mapping.forms, key)
    mapped = context.mapping.questionnaires.get(key) or context.mapping.questionnaires.get(bare)
    form = tenant_form if tenant_form is not None else None if mapped is not None else find_form(
        context.catalogue.forms, key)
    named = form.instrument if form is not None else mapped
    if named is not None:
        instrument = context.registry.get(named)
        if instrument is None:
            whose = "the Questionnaire imported for this canonical" if form is not None else \
                "this tenant's questionnaire map"
            return Problem(field="questionnaire", code="unknown_instrument",
                           message=f"{whose} names {shown(named)}, which is not an instrument Rapport has",
                           expected="one of " + ", ".join(i.id for i in context.registry))
        return instrument, form
    found = context.registry.by_questionnaire(bare)
    last = bare.rstrip("/").rsplit("/", 1)[-1]
    if found is None and LOINC_CODE.fullmatch(last):
        found = context.registry.by_questionnaire(last)
    return found, None



def _what_was_read(instrument: Instrument, reading: _Responses) -> Problem:
    """One line for clinic IT beside the unmapped linkIds: what was read as which item, what was not."""
    read = {number for _, number in reading.read}
    missing = [i.number for i in instrument.scored_items if i.number not in read]
    parts = [f"{instrument.id}: " + (", ".join(f"{shown_link_id(link)}→{n}" for link, n in reading.read[:8])
                                     + (", ..." if len(reading.read) > 8 else "") if reading.read else "no item read")]
    parts.append(f"{len(reading.unread)} answered linkIds read as no item")
    if missing:
        parts.append("items without an answer: " + number_ranges(missing))
    return Problem(field="item", code="link_ids_read", message="; ".join(parts), expected=reading.names.what_works())
