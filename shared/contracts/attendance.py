"""Attendance: one appointment (booked, attended, missed, cancelled) as Rapport keeps it, and ingest's
answers on `rapport.<tenant>.attendance.accepted|rejected`.

FHIR R4 Appointment and Encounter and the native attendance JSON (README, "Sending attendance")
normalise to one `Attendance`. An Encounter that names its Appointment is that appointment's later
state (the session took place), so the two are one appointment id and one record.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from rapport.shared.contracts.problems import Problem
from rapport.shared.contracts.tenancy import PseudonymousId, SubjectToken, TenantId

# booked: expected; attended: the session took place; no_show: the client did not come and did not
# cancel; cancelled: called off before it started (by whom in `cancelled_by`); void: entered in error,
# counts as nothing (it replaces whatever was recorded before).
AttendanceStatus = Literal["booked", "attended", "no_show", "cancelled", "void"]
CancelledBy = Literal["client", "clinic", "unknown"]
AttendanceSource = Literal["native", "fhir-appointment", "fhir-encounter", "fhir-episode-of-care"]
# planned: an agreed ending the clinic recorded; unplanned: the client stopped coming (recorded as such,
# or read from the attendance by the alerts service); open: neither
Ending = Literal["planned", "unplanned"]
AttendanceDisposition = Literal["new", "amended", "unchanged", "outdated"]


class Attendance(BaseModel):
    """The state of one appointment as the clinic's system last recorded it.

    `recorded_at` (FHIR `meta.lastUpdated`, native `recorded_at`) and `version` (FHIR `meta.versionId`
    when it is a whole number) order the states of one appointment: an older state arriving late does
    not replace a newer one. `cancellation_reason` is a code (FHIR appointment-cancellation-reason, or
    the clinic's own code), never free text."""

    model_config = ConfigDict(frozen=True)

    tenant: TenantId
    appointment_id: PseudonymousId
    client_id: PseudonymousId
    episode_id: PseudonymousId | None = None
    clinician_id: SubjectToken | None = None
    status: AttendanceStatus
    start: AwareDatetime | None = Field(default=None, description="absent only for cancelled or void appointments")
    cancelled_at: AwareDatetime | None = Field(default=None, description="when it was cancelled, where known")
    cancelled_by: CancelledBy | None = Field(default=None, description="set on cancelled appointments")
    cancellation_reason: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.:/|#\-]{1,64}$")
    recorded_at: AwareDatetime | None = None
    version: int | None = Field(default=None, ge=0)
    source_format: AttendanceSource = "native"
    warnings: list[Problem] = Field(default_factory=list)


class EpisodeEnding(BaseModel):
    """How an episode of care ended, as the clinic's system recorded it (FHIR EpisodeOfCare finished or
    cancelled, or the native ending JSON). Ordered like appointment states by `recorded_at`/`version`;
    the same episode's ending again replaces it (an ending entered in error is sent as a new one)."""

    model_config = ConfigDict(frozen=True)

    tenant: TenantId
    client_id: PseudonymousId
    episode_id: PseudonymousId
    ending: Ending
    ended_at: AwareDatetime
    recorded_at: AwareDatetime | None = None
    version: int | None = Field(default=None, ge=0)
    source_format: AttendanceSource = "native"
    warnings: list[Problem] = Field(default_factory=list)


class AttendanceAccepted(BaseModel):
    """`rapport.<tenant>.attendance.accepted`: stored; the alerts service takes it from here.

    `disposition`: `new` (first state of this appointment), `amended` (a newer state replaces the stored
    one; `revision` goes up), `unchanged` (the stored state again), `outdated` (older than the stored
    state by `recorded_at`/`version`: acknowledged, not stored, nothing downstream changes)."""

    model_config = ConfigDict(frozen=True)

    attendance: Attendance | None = Field(default=None, description="an appointment's state, or")
    ending: EpisodeEnding | None = Field(default=None, description="an episode's ending (one of the two)")
    revision: int = Field(ge=1)
    disposition: AttendanceDisposition
    inbound_message_id: str
    inbound_part: int = Field(default=1, ge=1)
    inbound_parts: int = Field(default=1, ge=1)


    @model_validator(mode="after")
    def _one_of(self) -> AttendanceAccepted:
        if (self.attendance is None) == (self.ending is None):
            raise ValueError("an accepted attendance message holds an appointment state or an ending, not both")
        return self


class AttendanceRejected(BaseModel):
    """`rapport.<tenant>.attendance.rejected`: not stored; every problem is named so IT can fix it."""

    model_config = ConfigDict(frozen=True)

    appointment_id: str | None = Field(default=None, description="the id the source gave, when it could be read")
    inbound_message_id: str
    inbound_part: int = Field(default=1, ge=1)
    inbound_parts: int = Field(default=1, ge=1)
    source_format: AttendanceSource | None = None
    problems: list[Problem]


class MissedSession(BaseModel):
    model_config = ConfigDict(frozen=True)

    appointment_id: PseudonymousId
    start: AwareDatetime
    kind: Literal["no_show", "late_cancellation"]


class AttendanceSummary(BaseModel):
    """One episode's attendance as of `as_of`, as the alerts service counts it (its disengagement rule's
    policy: what is late, whose cancellations count). A missed session is a no-show or a counted late
    cancellation; `missed_in_a_row` counts them since the last attended session (early and clinic
    cancellations neither count nor break the run); `missed_since_attended` lists the latest ten."""

    model_config = ConfigDict(frozen=True)

    as_of: AwareDatetime
    attended: int = 0
    no_shows: int = 0
    cancelled: int = 0
    late_cancellations: int = 0
    last_attended_at: AwareDatetime | None = None
    days_since_attended: float | None = None
    missed_in_a_row: int = 0
    missed_since_attended: list[MissedSession] = Field(default_factory=list)
    cancelled_since_attended: int = 0
    unrecorded_since_attended: int = Field(default=0, description="booked sessions since the last attended one "
                                                                  "whose start has passed with no outcome sent")
    next_booked_at: AwareDatetime | None = None
    ending: Ending | Literal["open"] = Field(default="open", description="planned, unplanned or still open")
    ending_recorded: bool = Field(default=False, description="the clinic recorded the ending (else read from "
                                                             "the attendance, or none)")
    ended_at: AwareDatetime | None = None
    ending_revision: int | None = Field(default=None, description="the revision of the recorded ending")


class AttendanceRecorded(BaseModel):
    """`rapport.<tenant>.attendance.recorded`: the alerts service has placed one appointment state in an
    episode and evaluated the episode's attendance (the last event of an appointment state's journey).
    `episode_id` is None when the appointment named no episode and the client has none yet: it is kept
    and counts in no episode."""

    model_config = ConfigDict(frozen=True)

    tenant: TenantId
    appointment_id: PseudonymousId
    revision: int = Field(ge=1)
    client_id: PseudonymousId
    episode_id: PseudonymousId | None = None
    clinician_id: SubjectToken | None = Field(
        default=None, description="the appointment's clinician, where the clinic's system named one (not on endings)")
    status: AttendanceStatus | Literal["ending"]
    summary: AttendanceSummary | None = None
    alert_ids: list[str] = Field(default_factory=list)
    transitions: list[str] = Field(default_factory=list)


def ending_id(client_id: str, episode_id: str) -> str:
    """The key an episode's ending is kept under beside the appointments (ingest_attendance,
    alerts_attendance.recorded): fixed length whatever the ids, and the client id not in clear."""
    digest = hashlib.sha256(f"{client_id}\x00{episode_id}".encode()).hexdigest()[:40]
    return f"ending:{digest}"
