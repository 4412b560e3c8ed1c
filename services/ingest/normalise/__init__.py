"""From whatever the clinic sent to canonical submissions, or precise rejections. Pure: no I/O, no clock
(`now`, when the message was received, is passed in: administration times are bounded by it).

One inbound message may hold several submissions (a FHIR Bundle): each gets its own answer, in
order, so the result is never empty. Accepted forms:
1. a CloudEvent (a JSON object with `specversion`) wrapping any form below in `data` (a JSON object,
   a JSON string, or `data_base64`); a `tenant` extension naming another tenant is `tenant_mismatch`;
2. a FHIR R4 resource (`resourceType`): QuestionnaireResponse, a Bundle of them, or an Observation
   carrying an instrument's LOINC total-score code (a total-only submission), see fhir/;
3. the native JSON submission, see native.py.
The body must be UTF-8 JSON (a byte-order mark is tolerated); anything else is one `invalid_json`
rejection with the line and column, never an echo of the payload. NaN and Infinity are refused (and
`1e309`, which reads as infinity, wherever a number is read). An object with a key twice, anywhere
in the body or in a CloudEvent's data, is one `duplicate_key` rejection per repeated key: readers
differ on which value counts (Python's last wins: `{"9": 3, "9": 0}` would hide a risk answer).
Every draft then passes the shared checks (outcome.finish): a known instrument, its licence for this
tenant, `snap_responses` (ranges, steps, the missing-item rule; values kept as exact steps) or
`check_total`. A rejection names at most 50 problems and counts the rest (outcome.bounded).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from datetime import datetime
from typing import Any

from rapport.services.ingest.normalise.attendance import (
    AttendanceRejection,
    AttendanceResult,
    normalise_native_attendance,
    normalise_native_ending,
)
from rapport.services.ingest.normalise.fhir import normalise_fhir
from rapport.services.ingest.normalise.fhir.attendance import normalise_fhir_attendance
from rapport.services.ingest.normalise.native import normalise_native
from rapport.services.ingest.normalise.outcome import Draft, Rejection, TenantMapping, finish
from rapport.services.ingest.normalise.reading import CODE_LIKE, path_key, shown
from rapport.shared.contracts.problems import Problem
from rapport.shared.contracts.submission import Submission
from rapport.shared.contracts.tenancy import is_tenant_id
from rapport.shared.instruments import Registry

__all__ = ["AttendanceRejection", "AttendanceResult", "Rejection", "TenantMapping", "normalise", "normalise_attendance"]

# Keys that say "this is a FHIR resource" when `resourceType` was forgotten.
FHIR_KEYS = frozenset({"item", "questionnaire", "authored", "subject", "entry", "valueQuantity"})


class _NotJson(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON number")


def normalise(
    body: bytes,
    *,
    tenant: str,
    registry: Registry,
    mapping: TenantMapping | None = None,
    licensed: frozenset[str] = frozenset(),
    now: datetime,
) -> list[Submission | Rejection]:
    if now.tzinfo is None:
        raise TypeError("now must be timezone-aware")  # a caller's mistake, not the sender's
    if not is_tenant_id(tenant):
        return [Rejection.of(Problem(field="subject", code="invalid_tenant",
                                     message="the subject does not name a valid tenant",
                                     expected="rapport.<tenant>.in.submissions, tenant [a-z0-9_-]{1,64}"))]
    document = _parse(body)
    if isinstance(document, Rejection):
        return [document]
    if "specversion" in document:
        unwrapped = _unwrap_cloudevent(document, tenant)
        if isinstance(unwrapped, Rejection):
            return [unwrapped]
        document = unwrapped
    drafts: list[Draft | Rejection]
    if "resourceType" in document:
        drafts = list(normalise_fhir(document, tenant, registry, mapping or TenantMapping(), now))
    elif "submission_id" not in document and FHIR_KEYS & document.keys():
        drafts = [Rejection.of(Problem(field="resourceType", code="missing_field",
                                       message="the body looks like a FHIR resource but has no resourceType",
                                       expected="resourceType QuestionnaireResponse, Bundle or Observation"))]
    else:
        drafts = [normalise_native(document, tenant, now)]
    return [finish(d, registry, licensed) for d in drafts]


def normalise_attendance(body: bytes, *, tenant: str, now: datetime) -> list[AttendanceResult]:
    """What arrived on rapport.<tenant>.in.attendance: one result per appointment (a Bundle holds several),
    never none. The same reading as submissions (UTF-8 JSON, each key once, an optional CloudEvent), then a
    FHIR Appointment, Encounter or Bundle (fhir/attendance.py) or the native attendance JSON (attendance.py)."""
    if now.tzinfo is None:
        raise TypeError("now must be timezone-aware")
    if not is_tenant_id(tenant):
        return [AttendanceRejection.of(Problem(
            field="subject", code="invalid_tenant", message="the subject does not name a valid tenant",
            expected="rapport.<tenant>.in.attendance, tenant [a-z0-9_-]{1,64}"))]
    document = _parse(body)
    if isinstance(document, Rejection):
        return [AttendanceRejection.of(*document.problems)]
    if "specversion" in document:
        unwrapped = _unwrap_cloudevent(document, tenant)
        if isinstance(unwrapped, Rejection):
            return [AttendanceRejection.of(*unwrapped.problems)]
        document = unwrapped
    if "resourceType" in document:
        return normalise_fhir_attendance(document, tenant, now)
    if "ending" in document and "appointment_id" not in document:
        return [normalise_native_ending(document, tenant, now)]
    return [normalise_native_attendance(document, tenant, now)]


def _parse(body: bytes | str, where: str = "body") -> dict[str, Any] | Rejection:
    def invalid(message: str) -> Rejection:
        return Rejection.of(Problem(field=where, code="invalid_json", message=message.replace("the body", where),
                                    expected="a UTF-8 JSON object"))

    try:
        text = body.decode("utf-8-sig") if isinstance(body, bytes | bytearray | memoryview) else str(body)
    except UnicodeDecodeError as exc:
        return invalid(f"the body is not UTF-8 text (byte {exc.start})")
    repeated: list[_Repeated] = []

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) == len(pairs):  # the hot path: one length comparison per object
            return obj
        marked = _Repeated(obj, [k for k, n in Counter(k for k, _ in pairs).items() if n > 1])
        repeated.append(marked)
        return marked

    try:
        document: Any = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as exc:
        return invalid(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except _NotJson as exc:
        return invalid(f"the body is not valid JSON: {exc}")
    except RecursionError:
        return invalid("the body is nested too deeply")
    except ValueError:  # e.g. an integer longer than Python converts
        return invalid("the body holds a number too long to read")
    if repeated:
        return Rejection.of(*_repeated_keys(document, "" if where == "body" else where))
    if not isinstance(document, dict):
        kind = {list: "an array", str: "a string", type(None): "null"}.get(type(document), "a number or boolean")
        return Rejection.of(Problem(field=where, code="not_an_object", message=f"{where} is {kind}",
                                    expected="a JSON object"))
    return document


def _unwrap_cloudevent(event: dict[str, Any], tenant: str) -> dict[str, Any] | Rejection:
    named = event.get("tenant")
    if named is not None and named != tenant:
        return Rejection.of(Problem(
            field="tenant", code="tenant_mismatch",
            message="the CloudEvent names another tenant than the subject it arrived on",
            expected=f"tenant {tenant!r} or no tenant attribute",
        ))
    data = event.get("data")
    where = "data"
    if data is None and isinstance(event.get("data_base64"), str):
        try:
            data, where = base64.b64decode(event["data_base64"], validate=True), "data_base64"
        except (binascii.Error, ValueError):
            return Rejection.of(Problem(field="data_base64", code="invalid_cloudevent",
                                        message="data_base64 is not base64", expected="base64 of a JSON object"))
    if isinstance(data, str | bytes):
        parsed = _parse(data, where)
        if isinstance(parsed, Rejection):
            return parsed
        data = parsed
    if not isinstance(data, dict):
        return Rejection.of(Problem(field="data", code="invalid_cloudevent",
                                    message="the CloudEvent has no JSON object in data",
                                    expected="a submission object in data"))
    return data


class _Repeated(dict[str, Any]):
    """A JSON object that held a key more than once, with the keys repeated."""

    def __init__(self, obj: dict[str, Any], keys: list[str]) -> None:
        super().__init__(obj)
        self.keys_repeated = keys


def _repeated_keys(document: Any, prefix: str) -> list[Problem]:
    """A `duplicate_key` problem for each repeated key, at its path (only met when there is one, so the
    walk costs nothing on the hot path). Keys are shown in paths and messages only when code-like."""
    problems: list[Problem] = []
    stack: list[tuple[Any, str]] = [(document, prefix)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            if isinstance(value, _Repeated):
                where = path or "the body"
                for key in value.keys_repeated:
                    named = f"the key {shown(key)}" if CODE_LIKE.fullmatch(key) else "a key (not shown)"
                    problems.append(Problem(
                        field=f"{path}.{path_key(key)}" if path else path_key(key), code="duplicate_key",
                        message=f"{named} appears more than once in {where}: JSON readers differ on which value "
                                "counts, so none is taken",
                        expected="each key once in each JSON object"))
            stack.extend((v, f"{path}.{path_key(k)}" if path else path_key(k)) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{n}]") for n, v in reversed(list(enumerate(value))))
    return problems
