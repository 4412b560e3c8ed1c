"""A total-score Observation: a total-only submission (`item_level` False)."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any

from rapport.services.ingest.normalise.fhir.answers import NUMERIC
from rapport.services.ingest.normalise.fhir.context import (
    LOINC_CODE,
    Bundled,
    Context,
    Invalid,
    _objects,
    _submission,
    read_status,
)
from rapport.services.ingest.normalise.fhir.references import PRACTITIONER, _episode, _reference_id, _subject
from rapport.services.ingest.normalise.fhir.response import _response_id, _submission_id, _temporary_id
from rapport.services.ingest.normalise.outcome import Draft
from rapport.services.ingest.normalise.reading import finite_number, read_instant
from rapport.shared.contracts.problems import Problem
from rapport.shared.instruments import Instrument

FINAL_OBSERVATION = ("final", "amended", "corrected")


def _relative(reference: str) -> str:
    """`https://ehr.example/fhir/QuestionnaireResponse/1/_history/2` -> `QuestionnaireResponse/1`."""
    parts = reference.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return "/".join(parts[-2:])


def _observation_instrument(resource: dict[str, Any], context: Context, problems: list[Problem],
                            warnings: list[Problem] | None = None) -> Instrument | None:
    """The instrument whose LOINC total-score code the Observation carries; or, with `warnings`, whose LOINC
    panel code it carries (a panel with a value and no members states the total in its own value, as the
    US Core screening-assessment examples do)."""
    code = resource.get("code")
    codings = _objects(code.get("coding")) if isinstance(code, dict) else []
    for coding in codings:
        if isinstance(coding.get("code"), str) and (found := context.registry.by_total_code(coding["code"])):
            return found
    if warnings is not None:
        for coding in codings:
            if (found := panel_instrument(coding.get("code"), context)) is not None:
                warnings.append(Problem(
                    field="code.coding", code="panel_value_as_total",
                    message=f"the Observation carries the {found.id} panel code {coding['code']} with a value and "
                            "no hasMember: its value is read as the total (a total-only submission, so no "
                            "critical-item check)",
                    expected=f"the total under {found.coding.loinc_total}, or the item Observations as hasMember"))
                return found
    known = ", ".join(f"{i.coding.loinc_total} ({i.id})" for i in context.registry if i.coding.loinc_total)
    problems.append(Problem(
        field="code.coding", code="unknown_instrument" if codings else "missing_field",
        message="the Observation's code is not a known instrument total score" if codings
        else "the Observation has no code.coding", expected=f"a LOINC total-score code: {known}"))
    return None


def panel_instrument(code: Any, context: Context) -> Instrument | None:
    """The instrument whose LOINC panel code this is (44249-1 -> PHQ-9), if any."""
    if not isinstance(code, str) or not LOINC_CODE.fullmatch(code):
        return None
    found = context.registry.by_questionnaire(code)
    return found if found is not None and found.coding.loinc_panel == code else None


def _performer(resource: dict[str, Any], problems: list[Problem], context: Context) -> str | None:
    """The clinician: the first Practitioner(Role) performer."""
    for n, performer in enumerate(_objects(resource.get("performer"))):
        reference = performer.get("reference")
        bundled = context.full_urls.get(reference.strip()) if isinstance(reference, str) else None
        if isinstance(reference, str) and (re.search(r"(?:^|/)(Practitioner|PractitionerRole)/", reference)
                                           or (bundled is not None and bundled.get("resourceType") in PRACTITIONER)):
            return _reference_id(performer, f"performer[{n}]", PRACTITIONER, problems, context.full_urls,
                                 token=True)
    return None


def _observed_at(resource: dict[str, Any], now: datetime) -> Any:
    period = resource.get("effectivePeriod")
    for path, value in (("effectiveDateTime", resource.get("effectiveDateTime")),
                        ("effectiveInstant", resource.get("effectiveInstant")),
                        ("effectivePeriod.start", period.get("start") if isinstance(period, dict) else None),
                        ("issued", resource.get("issued"))):
        if value is not None:
            return read_instant(value, path, now)
    return read_instant(None, "effectiveDateTime", now)


def _observation_value(resource: dict[str, Any], problems: list[Problem],
                       warnings: list[Problem]) -> float | None:
    for key, path in (("valueQuantity", "valueQuantity.value"), ("valueInteger", "valueInteger")):
        if key in resource:
            raw = resource[key]
            value = finite_number(raw.get("value") if isinstance(raw, dict) else raw)
            if value is None:
                problems.append(Problem(field=path, code="invalid_fhir", message=f"{path} is not a number",
                                        expected="the total as a JSON number"))
            return value
    if isinstance(resource.get("valueString"), str):
        if NUMERIC.fullmatch(resource["valueString"]):
            warnings.append(Problem(field="valueString", code="total_as_string",
                                    message="the total is a numeric string; it is read as the number",
                                    expected="the total in valueQuantity.value or valueInteger"))
            return float(resource["valueString"])
        problems.append(Problem(field="valueString", code="not_a_number", message="valueString is not a number",
                                expected="the total in valueQuantity.value or valueInteger"))
        return None
    problems.append(Problem(field="valueQuantity", code="missing_field", message="the Observation has no value",
                            expected="the total in valueQuantity.value or valueInteger"))
    return None


def _observation_id(resource: dict[str, Any], bundle: Bundled, full_url: str | None) -> str | None:
    scratch: list[Problem] = []
    client = _reference_id(resource.get("subject"), "subject", ("Patient",), scratch, bundle) \
        if resource.get("subject") is not None else None
    ident = _submission_id(resource, scratch, full_url)
    if client is None or ident is None:
        return _response_id(resource, full_url)
    # Observation ids repeat across patients in real feeds, so the submission id depends on the patient too;
    # but it appears in every log line and event that names the submission, so the client id is not in it
    # in clear: a digest of both (NUL cannot occur in either id, so two pairs never join to one text).
    return "obs:" + hashlib.sha256(f"{client}\x00{ident}".encode()).hexdigest()[:40]


def _observation(resource: dict[str, Any], context: Context, full_url: str | None) -> Draft:
    problems: list[Problem] = []
    warnings = _temporary_id(resource, full_url)
    instrument = _observation_instrument(resource, context, problems, warnings)
    status = read_status(resource, FINAL_OBSERVATION, problems)
    value = _observation_value(resource, problems, warnings)
    client = _subject(resource, problems, context.full_urls)
    _submission_id(resource, problems, full_url)
    observed = _observed_at(resource, context.now)
    if isinstance(observed, Problem):
        problems.append(observed)
    clinician = _performer(resource, problems, context)
    for n, source in enumerate(_objects(resource.get("derivedFrom"))):
        reference = source.get("reference")
        if isinstance(reference, str) and (reference in context.bundled_responses
                                           or _relative(reference) in context.bundled_responses):
            problems.append(Problem(
                field=f"derivedFrom[{n}]", code="derived_from_response",
                message="this total is derived from a QuestionnaireResponse in the same Bundle, which is scored "
                        "from its items; scoring both would count the administration twice",
                expected="the QuestionnaireResponse alone, or this Observation without it"))
    episode = _episode(resource, problems, context.full_urls)
    if problems or isinstance(observed, Problem):
        raise Invalid(problems, instrument)
    submission_id = _observation_id(resource, context.full_urls, full_url)
    assert instrument is not None and client is not None and value is not None and submission_id is not None
    submission = _submission(
        instrument, tenant=context.tenant, submission_id=submission_id, client_id=client,
        episode_id=episode, clinician_id=clinician, administered_at=observed, reported_total=value,
        item_level=False, amends=status in ("amended", "corrected"), source_format="fhir-observation",
        warnings=warnings,
    )
    return Draft(submission)

