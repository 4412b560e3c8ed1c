"""The native JSON submission, for systems that do not speak FHIR.

```json
{
  "submission_id": "sub-2026-0001",
  "instrument": "phq9",
  "client_id": "client-0007",
  "episode_id": "episode-0007-1",
  "clinician_id": "clinician-03",
  "administered_at": "2026-03-02T10:15:00+00:00",
  "session": 4,
  "responses": {"1": 2, "2": 1, "3": 0, "4": 1, "5": 0, "6": 1, "7": 2, "8": 0, "9": 0},
  "amends": false
}
```

Fields (required unless marked optional):
- `submission_id`: unique per tenant; resending it with new content amends it. Submission, client
  and episode ids match `[A-Za-z0-9_.:/-]{1,128}` (dots allowed, as in FHIR ids).
- `instrument`: an instrument id from the registry (`rapport instruments`): `phq9`, `gad7`, ...
- `client_id`: the clinic's pseudonymous client id (never a name).
- `episode_id` (optional): the episode of care; absent: the client's default episode.
- `clinician_id` (optional): `[A-Za-z0-9_-]{1,128}`, no dots: notifications go to
  `rapport.<tenant>.notify.<clinician_id>`, where a dot would split the subject token.
- `administered_at`: ISO-8601 date and time with a UTC offset (`Z` or `+01:00`); a date alone
  (`date_without_time`) or a time without offset (`missing_timezone`) is refused, and so is one
  before 1900-01-01T00:00:00Z or more than a day after Rapport received it (`out_of_range`).
- `session` (optional): the session number, an integer from 0 to 1000 (`out_of_range` above).
- `responses`: item number (1-based, as in the registry) -> the answer's value as a JSON number,
  or `null` for an item asked and declined; the instrument's missing-item rule then decides.
  Unscored items (PHQ-9 item 10) may be sent: they are range-checked, never required or scored.
- `total` (optional): for a total-only submission, when no item responses exist (then no
  critical-item check is possible). Sent beside `responses` it is never scored: the warning
  `total_mismatch` names a total that disagrees with the items (`stated_total_ignored` when items
  are missing and it cannot be compared).
- `amends` (optional, default false): this corrects an earlier submission (the same
  `submission_id` with new content supersedes the old either way).
- `tenant` (optional): if present, the tenant of the subject the message arrived on, else
  `tenant_mismatch`.

Any other field is refused (`unknown_field`). Numbers must be finite JSON numbers (not strings or
booleans; `1e309` reads as infinity and is refused). A key twice in one object is refused before any
of this (`duplicate_key`, see normalise/__init__.py).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from rapport.services.ingest.normalise.outcome import Draft, Rejection, StatedTotal
from rapport.services.ingest.normalise.reading import ID_RULE, TOKEN_RULE, path_key, read_instant, readable_id
from rapport.shared.contracts.problems import Problem
from rapport.shared.contracts.submission import Submission
from rapport.shared.contracts.tenancy import PseudonymousId, SubjectToken

# pydantic error types -> stable codes clinic IT can switch on
CODES = {
    "missing": "missing_field", "extra_forbidden": "unknown_field", "string_pattern_mismatch": "invalid_id",
    "float_type": "not_a_number", "finite_number": "not_a_number", "int_type": "not_an_integer",
    "bool_type": "not_a_boolean", "string_type": "not_a_string", "dict_type": "not_an_object",
    "model_type": "not_an_object", "string_too_long": "too_long", "string_too_short": "too_short",
    "greater_than_equal": "out_of_range", "less_than_equal": "out_of_range",
}
# Rapport's sanity bound on a session number, not a clinical fact: no course of therapy Rapport
# follows reaches a thousand sessions; a larger number is a mistake (an id or a date in the field).
MAX_SESSION = 1000
RULES = {"session": f"an integer from 0 to {MAX_SESSION}"}
ITEM_KEY = re.compile(r"^[0-9]{1,3}$")

Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]


class NativeSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid")

    submission_id: PseudonymousId
    instrument: str = Field(min_length=1, max_length=64)
    client_id: PseudonymousId
    episode_id: PseudonymousId | None = None
    clinician_id: SubjectToken | None = None
    administered_at: Annotated[str, Strict()]
    session: Annotated[int, Strict(), Field(ge=0, le=MAX_SESSION)] | None = None
    responses: dict[str, Number | None] | None = None
    total: Number | None = None
    amends: Annotated[bool, Strict()] = False
    tenant: Annotated[str, Strict()] | None = None


def _path(loc: tuple[int | str, ...], prefix: str) -> str:
    """A field path from a pydantic location; keys that came from the payload are shown only if code-like."""
    parts = [str(p) if isinstance(p, int) else path_key(p) for p in loc]
    return prefix + ".".join(parts) if parts else (prefix.rstrip(".") or "body")


def pydantic_problems(error: ValidationError, prefix: str = "") -> list[Problem]:
    problems = []
    for e in error.errors(include_input=False, include_url=False, include_context=False):
        field = _path(e["loc"], prefix)
        code = CODES.get(e["type"], e["type"])
        if code == "invalid_id":
            token = e["loc"][-1] == "clinician_id"
            problems.append(Problem(field=field, code=code, message=f"{field} breaks the id rule",
                                    expected=TOKEN_RULE if token else ID_RULE))
        else:
            problems.append(Problem(field=field, code=code, message=f"{field}: {e['msg']}",
                                    expected=RULES.get(field)))
    return problems


def normalise_native(document: dict[str, Any], tenant: str, now: datetime) -> Draft | Rejection:
    submission_id = readable_id(document.get("submission_id"))
    when = read_instant(document.get("administered_at"), "administered_at", now) \
        if isinstance(document.get("administered_at"), str) else None
    try:
        native = NativeSubmission.model_validate(document)
    except ValidationError as exc:
        problems = pydantic_problems(exc)
        if isinstance(when, Problem):
            problems.append(when)
        named = document.get("instrument")
        return Rejection.of(*problems, submission_id=submission_id, source_format="native",
                            instrument=named if isinstance(named, str) else None)
    problems = []
    if isinstance(when, Problem):
        problems.append(when)
    if native.tenant is not None and native.tenant != tenant:
        problems.append(Problem(field="tenant", code="tenant_mismatch",
                                message="the payload names another tenant than the subject it arrived on",
                                expected=f"{tenant!r} or no tenant field"))
    responses: dict[int, float | None] = {}
    for key, value in (native.responses or {}).items():
        if not ITEM_KEY.fullmatch(key):
            problems.append(Problem(field=f"responses.{path_key(key)}", code="unknown_item",
                                    message="response keys are item numbers", expected='"1", "2", "3", ...'))
            continue
        if int(key) in responses:  # "1" and "01"
            problems.append(Problem(field=f"responses.{key}", code="duplicate_item",
                                    message=f"item {int(key)} is given twice", expected="each item once"))
            continue
        responses[int(key)] = value
    item_level = bool(native.responses)
    if not item_level and native.total is None:
        problems.append(Problem(field="responses", code="missing_field", message="there are no responses",
                                expected="item responses, or a total for a total-only submission"))
    if problems or not isinstance(when, datetime):  # `when` is read whenever the model is valid
        # `instrument` is the sender's text here: `finish` keeps it only if it is a registry id.
        return Rejection.of(*problems, submission_id=native.submission_id, source_format="native",
                            instrument=native.instrument)
    submission = Submission(
        tenant=tenant, submission_id=native.submission_id, instrument=native.instrument,
        client_id=native.client_id, episode_id=native.episode_id, clinician_id=native.clinician_id,
        administered_at=when, session_number=native.session, responses=responses,
        reported_total=None if item_level else native.total, item_level=item_level, amends=native.amends,
        source_format="native",
    )
    stated = StatedTotal("total", native.total) if item_level and native.total is not None else None
    return Draft(submission, stated)
