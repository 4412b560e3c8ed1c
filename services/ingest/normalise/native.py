"""The native JSON submission, for systems that do not speak FHIR.

```json
{
  "submission_id": "sub-2026-0001",           // unique per tenant; resending it with new content amends it
  "instrument": "phq9",                         // an id from `rapport instruments`
  "client_id": "client-0007",                   // pseudonymous ids only
  "episode_id": "episode-0007-1",               // optional; absent: the client's "default" episode
  "clinician_id": "clinician-03",               // optional; notifications go to rapport.<tenant>.notify.<clinician_id>
  "administered_at": "2026-03-02T10:15:00+00:00",  // with a UTC offset
  "session": 4,                                 // optional session number
  "responses": {"1": 2, "2": 1, "3": 0, "4": 1, "5": 0, "6": 1, "7": 2, "8": 0, "9": 0},
  "total": null,                                // only for total-only submissions (no responses)
  "amends": false,                              // optional: this corrects an earlier submission
  "tenant": "acme"                              // optional; if present it must be the subject's tenant
}
```
`responses` maps item numbers (1-based, as in the registry) to the answer's value; `null` means
asked and not answered, then the instrument's missing-item rule decides.
"""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from services.ingest.normalise.outcome import Rejection
from shared.contracts.problems import Problem
from shared.contracts.submission import Submission
from shared.contracts.tenancy import PseudonymousId, SubjectToken

# pydantic error types -> stable codes clinic IT can switch on
CODES = {
    "missing": "missing_field", "extra_forbidden": "unknown_field", "string_pattern_mismatch": "invalid_id",
    "timezone_aware": "missing_timezone", "datetime_from_date_parsing": "invalid_datetime",
    "datetime_parsing": "invalid_datetime", "datetime_type": "invalid_datetime",
    "float_parsing": "not_a_number", "float_type": "not_a_number", "int_parsing": "not_an_integer",
}


class NativeSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid")

    submission_id: PseudonymousId
    instrument: str = Field(max_length=64)
    client_id: PseudonymousId
    episode_id: PseudonymousId | None = None
    clinician_id: SubjectToken | None = None
    administered_at: AwareDatetime
    session: int | None = Field(default=None, ge=0)
    responses: dict[str, float | None] | None = None
    total: float | None = None
    amends: bool = False
    tenant: str | None = None


def pydantic_problems(error: ValidationError, prefix: str = "") -> list[Problem]:
    problems = []
    for e in error.errors(include_input=False, include_url=False):
        field = prefix + ".".join(str(part) for part in e["loc"])
        problems.append(Problem(field=field or "body", code=CODES.get(e["type"], e["type"]),
                                message=f"{field or 'body'}: {e['msg']}"))
    return problems


def normalise_native(document: dict[str, Any], tenant: str) -> Submission | Rejection:
    submission_id = document.get("submission_id") if isinstance(document.get("submission_id"), str) else None
    try:
        native = NativeSubmission.model_validate(document)
    except ValidationError as exc:
        return Rejection.of(*pydantic_problems(exc), submission_id=submission_id, source_format="native")
    problems: list[Problem] = []
    warnings: list[Problem] = []
    if native.tenant is not None and native.tenant != tenant:
        problems.append(Problem(field="tenant", code="tenant_mismatch",
                                message="the payload names another tenant than the subject it arrived on",
                                expected=f"{tenant!r} or no tenant field"))
    responses: dict[int, float | None] = {}
    for key, value in (native.responses or {}).items():
        if not key.isdigit():
            problems.append(Problem(field=f"responses.{key}", code="unknown_item",
                                    message="response keys are item numbers", expected="1, 2, 3, ..."))
            continue
        responses[int(key)] = value
    item_level = native.responses is not None
    if native.responses is not None and native.total is not None:
        warnings.append(Problem(field="total", code="stated_total_ignored",
                                message="the stated total is ignored; the score is computed from the responses"))
    if native.responses is None and native.total is None:
        problems.append(Problem(field="responses", code="missing_field", message="responses: field required",
                                expected="item responses, or a total for a total-only submission"))
    if problems:
        return Rejection.of(*problems, submission_id=native.submission_id, source_format="native")
    return Submission(
        tenant=tenant, submission_id=native.submission_id, instrument=native.instrument,
        client_id=native.client_id, episode_id=native.episode_id, clinician_id=native.clinician_id,
        administered_at=native.administered_at, session_number=native.session, responses=responses,
        reported_total=None if item_level else native.total, item_level=item_level, amends=native.amends,
        source_format="native", warnings=warnings,
    )
