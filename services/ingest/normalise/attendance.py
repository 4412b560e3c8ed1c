"""The native attendance JSON, and what every attendance form shares (its rejection, the bounds on a
start, the last check). `normalise_attendance` (normalise/__init__.py) reads the body and hands a FHIR
resource to fhir/attendance.py and anything else here. Rejections name fields and codes, never values.

The native attendance JSON:

```json
{
  "appointment_id": "appt-0007-04",
  "client_id": "client-0007",
  "episode_id": "episode-0007-1",
  "clinician_id": "clinician-03",
  "status": "cancelled",
  "start": "2026-03-09T10:00:00+00:00",
  "recorded_at": "2026-03-08T18:30:00+00:00",
  "cancelled_at": "2026-03-08T18:30:00+00:00",
  "cancelled_by": "client",
  "reason": "pat-lt"
}
```

- `appointment_id`: unique per tenant; the same id again is a later state of that appointment.
- `client_id`, `episode_id` (optional), `clinician_id` (optional): as in the submission JSON.
- `status`: `booked`, `attended`, `no_show`, `cancelled` or `void` (entered in error: counts as nothing).
- `start`: when the session was (or is) to start, a date and time with a UTC offset; required unless
  cancelled or void. At most a day after Rapport received it for `attended` and `no_show`, at most
  two years ahead for `booked` (Rapport's sanity bounds, not clinical figures).
- `recorded_at`: when the clinic's system recorded this state; it orders the states of one appointment,
  so an older state arriving late does not replace a newer one. At most a day after it was received.
- `cancelled_at` (optional, cancelled only): when it was cancelled; Rapport judges a late cancellation
  from it (the alerts service's policy). Without it a cancellation is never counted as late.
- `cancelled_by` (optional, cancelled only): `client`, `clinic` or `unknown` (default).
- `reason` (optional, cancelled only): a code, `[A-Za-z0-9_.:/|#-]{1,64}`; the FHIR
  appointment-cancellation-reason codes (`pat-lt`, `prov-pers`, ...) are understood, never free text.
- `tenant` (optional): if present, the subject's tenant, else `tenant_mismatch`.
Any other field is `unknown_field`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Strict, ValidationError

from rapport.services.ingest.normalise.native import pydantic_problems
from rapport.services.ingest.normalise.outcome import bounded
from rapport.services.ingest.normalise.reading import CLOCK_SKEW, CODE_LIKE, read_instant, readable_id, shown
from rapport.shared.contracts.attendance import (
    Attendance,
    AttendanceSource,
    AttendanceStatus,
    CancelledBy,
    EpisodeEnding,
)
from rapport.shared.contracts.problems import Problem
from rapport.shared.contracts.tenancy import PseudonymousId, SubjectToken

# Rapport's sanity bound on a booked appointment's start, not a clinical figure: a course of therapy is
# not booked more than two years ahead; a later start is a mistake (a wrong year).
BOOKING_HORIZON = timedelta(days=2 * 366)
# read_instant checks a time against `now` plus a day; starts are checked against their own bounds below.
_NO_UPPER_BOUND = datetime(9000, 1, 1, tzinfo=UTC)
STATUSES: tuple[AttendanceStatus, ...] = ("booked", "attended", "no_show", "cancelled", "void")
CANCELLERS: tuple[CancelledBy, ...] = ("client", "clinic", "unknown")
TAKEN_PLACE_OR_MISSED = ("attended", "no_show")


@dataclass(frozen=True)
class AttendanceRejection:
    appointment_id: str | None  # the id the source gave, if readable
    source_format: AttendanceSource | None
    problems: list[Problem]

    def __post_init__(self) -> None:
        object.__setattr__(self, "problems", bounded(self.problems))

    @classmethod
    def of(cls, *problems: Problem, appointment_id: str | None = None,
           source_format: AttendanceSource | None = None) -> AttendanceRejection:
        return cls(appointment_id, source_format, list(problems))


AttendanceResult = Attendance | EpisodeEnding | AttendanceRejection


def read_start(value: Any, field: str, status: str, now: datetime) -> datetime | Problem:
    """A start time: a date and time with an offset, from 1900; no later than a day after `now` for a
    session that took place or was missed, no more than BOOKING_HORIZON ahead otherwise."""
    start = read_instant(value, field, _NO_UPPER_BOUND)
    if isinstance(start, Problem):
        return start
    if status in TAKEN_PLACE_OR_MISSED and start > now + CLOCK_SKEW:
        return Problem(field=field, code="out_of_range",
                       message=f"{field} of an appointment recorded as {status} is more than a day after Rapport "
                               "received it", expected="a start in the past for an attended or missed appointment")
    if start > now + BOOKING_HORIZON:
        return Problem(field=field, code="out_of_range", message=f"{field} is more than two years ahead",
                       expected="a start within two years of when Rapport received it")
    return start


def kept(read: datetime | Problem, problems: list[Problem]) -> datetime | None:
    """The time read, or None with its problem noted."""
    if isinstance(read, Problem):
        problems.append(read)
        return None
    return read


def build(problems: list[Problem], appointment_id: str | None, source: AttendanceSource,
          **fields: Any) -> AttendanceResult:
    """The Attendance when no problem was found; the model's own validation is the last line of defence."""
    if problems:
        return AttendanceRejection.of(*problems, appointment_id=appointment_id, source_format=source)
    try:
        if "ending" in fields:
            return EpisodeEnding(source_format=source, **fields)
        return Attendance(appointment_id=appointment_id, source_format=source, **fields)
    except ValidationError as exc:
        return AttendanceRejection.of(*[
            Problem(field=".".join(str(p) for p in e["loc"]) or "body", code="invalid_attendance",
                    message=e["msg"])
            for e in exc.errors(include_input=False, include_url=False, include_context=False)
        ], appointment_id=appointment_id, source_format=source)


class NativeAttendance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    appointment_id: PseudonymousId
    client_id: PseudonymousId
    episode_id: PseudonymousId | None = None
    clinician_id: SubjectToken | None = None
    status: Annotated[str, Strict()]
    start: Annotated[str, Strict()] | None = None
    recorded_at: Annotated[str, Strict()]
    cancelled_at: Annotated[str, Strict()] | None = None
    cancelled_by: Annotated[str, Strict()] | None = None
    reason: Annotated[str, Strict()] | None = None
    tenant: Annotated[str, Strict()] | None = None


def normalise_native_attendance(document: dict[str, Any], tenant: str, now: datetime) -> AttendanceResult:
    appointment_id = readable_id(document.get("appointment_id"))
    try:
        native = NativeAttendance.model_validate(document)
    except ValidationError as exc:
        return AttendanceRejection.of(*pydantic_problems(exc), appointment_id=appointment_id,
                                      source_format="native")
    problems: list[Problem] = []
    if native.tenant is not None and native.tenant != tenant:
        problems.append(Problem(field="tenant", code="tenant_mismatch",
                                message="the payload names another tenant than the subject it arrived on",
                                expected=f"{tenant!r} or no tenant field"))
    status = native.status
    if status not in STATUSES:
        problems.append(Problem(field="status", code="invalid_code", message=f"status is {shown(status)}",
                                expected=", ".join(STATUSES)))
    start = None
    if native.start is not None:
        start = kept(read_start(native.start, "start", status, now), problems)
    elif status not in ("cancelled", "void"):
        problems.append(Problem(field="start", code="missing_field", message="start is missing",
                                expected="the start of the session, required unless cancelled or void"))
    recorded = kept(read_instant(native.recorded_at, "recorded_at", now), problems)
    cancelled_at = None
    cancelled_by: str | None = None
    reason = None
    if status != "cancelled":
        for name in ("cancelled_at", "cancelled_by", "reason"):
            if getattr(native, name) is not None:
                problems.append(Problem(field=name, code="not_cancelled",
                                        message=f"{name} is given on an appointment that is not cancelled",
                                        expected=f"{name} only with status cancelled"))
    else:
        if native.cancelled_at is not None:
            cancelled_at = kept(read_instant(native.cancelled_at, "cancelled_at", now), problems)
        cancelled_by = native.cancelled_by or "unknown"
        if cancelled_by not in CANCELLERS:
            problems.append(Problem(field="cancelled_by", code="invalid_code",
                                    message=f"cancelled_by is {shown(cancelled_by)}", expected=", ".join(CANCELLERS)))
        if native.reason is not None:
            if CODE_LIKE.fullmatch(native.reason):
                reason = native.reason
            else:
                problems.append(Problem(field="reason", code="invalid_code", message="reason is not a code",
                                        expected="a code [A-Za-z0-9_.:/|#-]{1,64}, never free text"))
    return build(problems, native.appointment_id, "native", tenant=tenant, client_id=native.client_id,
                 episode_id=native.episode_id, clinician_id=native.clinician_id, status=status, start=start,
                 cancelled_at=cancelled_at, cancelled_by=cancelled_by, cancellation_reason=reason,
                 recorded_at=recorded)


class NativeEnding(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_id: PseudonymousId
    episode_id: PseudonymousId
    ending: Annotated[str, Strict()]
    ended_at: Annotated[str, Strict()]
    recorded_at: Annotated[str, Strict()]
    tenant: Annotated[str, Strict()] | None = None


ENDINGS = ("planned", "unplanned")


def normalise_native_ending(document: dict[str, Any], tenant: str, now: datetime) -> AttendanceResult:
    """`{"client_id", "episode_id", "ending": "planned"|"unplanned", "ended_at", "recorded_at"}`: how an
    episode ended, as the clinic recorded it."""
    try:
        native = NativeEnding.model_validate(document)
    except ValidationError as exc:
        return AttendanceRejection.of(*pydantic_problems(exc), source_format="native")
    problems: list[Problem] = []
    if native.tenant is not None and native.tenant != tenant:
        problems.append(Problem(field="tenant", code="tenant_mismatch",
                                message="the payload names another tenant than the subject it arrived on",
                                expected=f"{tenant!r} or no tenant field"))
    if native.ending not in ENDINGS:
        problems.append(Problem(field="ending", code="invalid_code", message=f"ending is {shown(native.ending)}",
                                expected=" or ".join(ENDINGS)))
    ended_at = kept(read_instant(native.ended_at, "ended_at", now), problems)
    recorded = kept(read_instant(native.recorded_at, "recorded_at", now), problems)
    return build(problems, None, "native", tenant=tenant, client_id=native.client_id, episode_id=native.episode_id,
                 ending=native.ending, ended_at=ended_at, recorded_at=recorded)
