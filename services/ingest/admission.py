"""Whether a valid submission is new, an amendment, or a resubmission of what is already stored."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from rapport.shared.contracts.attendance import Attendance, AttendanceDisposition, EpisodeEnding, ending_id
from rapport.shared.contracts.submission import Submission


@dataclass(frozen=True)
class Admission:
    revision: int
    disposition: Literal["new", "amended", "unchanged"]
    content_hash: str

    @property
    def changes_anything(self) -> bool:
        return self.disposition != "unchanged"


def content_hash(submission: Submission) -> str:
    """Identity of the clinical content; warnings and the source's amend flag are not content."""
    content = submission.model_dump_json(exclude={"warnings", "amends"})
    return hashlib.sha256(content.encode()).hexdigest()


def admit(submission: Submission, stored: tuple[int, str] | None) -> Admission:
    """`stored` is (revision, content hash) of what ingest already holds for this submission id.

    The same id with new content supersedes the old as the next revision, whether or not the source
    flagged it as an amendment: the latest word of the clinic's system stands.
    """
    digest = content_hash(submission)
    if stored is None:
        return Admission(revision=1, disposition="new", content_hash=digest)
    revision, previous_digest = stored
    if previous_digest == digest:
        return Admission(revision=revision, disposition="unchanged", content_hash=digest)
    return Admission(revision=revision + 1, disposition="amended", content_hash=digest)


# What ingest holds of an appointment: revision, content hash, and the source's recorded_at and version.
StoredAppointment = tuple[int, str, datetime | None, int | None]


@dataclass(frozen=True)
class AttendanceAdmission:
    revision: int
    disposition: AttendanceDisposition
    content_hash: str

    @property
    def changes_anything(self) -> bool:
        return self.disposition in ("new", "amended")


def record_id(record: Attendance | EpisodeEnding) -> str:
    """What an appointment state or an episode's ending is kept under in ingest_attendance."""
    if isinstance(record, EpisodeEnding):
        return ending_id(record.client_id, record.episode_id)
    return record.appointment_id


def attendance_hash(attendance: Attendance | EpisodeEnding) -> str:
    return hashlib.sha256(attendance.model_dump_json(exclude={"warnings"}).encode()).hexdigest()


def admit_attendance(attendance: Attendance | EpisodeEnding, stored: StoredAppointment | None) -> AttendanceAdmission:
    """A later state of an appointment replaces the stored one (`amended`); an earlier one arriving late
    (by the source's recorded_at, then its version) is `outdated` and changes nothing. When the two
    cannot be ordered (no recorded_at or version on one side) the one arriving last stands."""
    digest = attendance_hash(attendance)
    if stored is None:
        return AttendanceAdmission(revision=1, disposition="new", content_hash=digest)
    revision, previous_digest, recorded_at, version = stored
    if previous_digest == digest:
        return AttendanceAdmission(revision=revision, disposition="unchanged", content_hash=digest)
    if is_older(attendance, recorded_at, version):
        return AttendanceAdmission(revision=revision, disposition="outdated", content_hash=previous_digest)
    return AttendanceAdmission(revision=revision + 1, disposition="amended", content_hash=digest)


def is_older(attendance: Attendance | EpisodeEnding, recorded_at: datetime | None, version: int | None) -> bool:
    """Whether this state was recorded before the stored one."""
    if attendance.recorded_at is not None and recorded_at is not None and attendance.recorded_at != recorded_at:
        return attendance.recorded_at < recorded_at
    if attendance.version is not None and version is not None:
        return attendance.version < version
    return False
