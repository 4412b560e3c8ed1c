"""From whatever the clinic sent to canonical submissions, or precise rejections. Pure: no I/O.

One inbound message may hold several submissions (a FHIR Bundle): each gets its own answer.
Accepted forms, tried in this order:
1. a CloudEvent (`specversion` present) wrapping any of the forms below in `data`;
2. a FHIR R4 resource (`resourceType`): QuestionnaireResponse, Bundle of them, or an Observation
   carrying an instrument's LOINC total-score code (a total-only submission), see fhir.py;
3. the native JSON submission, see native.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from services.ingest.normalise.fhir import normalise_fhir
from services.ingest.normalise.native import normalise_native
from services.ingest.normalise.outcome import Rejection, TenantMapping, finish
from shared.contracts.problems import Problem
from shared.contracts.submission import Submission
from shared.instruments import Registry

__all__ = ["Rejection", "TenantMapping", "normalise"]


def normalise(
    body: bytes,
    *,
    tenant: str,
    registry: Registry,
    mapping: TenantMapping | None = None,
    licensed: frozenset[str] = frozenset(),
) -> list[Submission | Rejection]:
    try:
        document: Any = json.loads(body)
    except UnicodeDecodeError:
        return [Rejection.of(Problem(field="body", code="invalid_json", message="the body is not UTF-8 text",
                                     expected="a UTF-8 JSON document"))]
    except json.JSONDecodeError as exc:
        return [Rejection.of(Problem(
            field="body", code="invalid_json",
            message=f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            expected="a JSON object",
        ))]
    if not isinstance(document, dict):
        return [Rejection.of(Problem(field="body", code="not_an_object",
                                     message=f"the body is a JSON {type(document).__name__}",
                                     expected="a JSON object"))]
    if "specversion" in document:
        unwrapped = _unwrap_cloudevent(document, tenant)
        if isinstance(unwrapped, Rejection):
            return [unwrapped]
        document = unwrapped
    mapping = mapping or TenantMapping()
    drafts = normalise_fhir(document, tenant, registry, mapping) if "resourceType" in document \
        else [normalise_native(document, tenant)]
    return [finish(d, registry, licensed) for d in drafts]


def _unwrap_cloudevent(event: dict[str, Any], tenant: str) -> dict[str, Any] | Rejection:
    named = event.get("tenant")
    if named is not None and named != tenant:
        return Rejection.of(Problem(
            field="tenant", code="tenant_mismatch",
            message="the CloudEvent names another tenant than the subject it arrived on",
            expected=f"tenant {tenant!r} or no tenant attribute",
        ))
    data = event.get("data")
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError:
            data = None
    if not isinstance(data, dict):
        return Rejection.of(Problem(field="data", code="invalid_cloudevent",
                                    message="the CloudEvent has no JSON object in `data`",
                                    expected="a submission object in `data`"))
    return data


def problems_of(results: Sequence[Submission | Rejection]) -> list[Problem]:
    return [p for r in results if isinstance(r, Rejection) for p in r.problems]
