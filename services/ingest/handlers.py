"""Inbound submissions and attendance: normalise, admit, store, answer. Every submission and every
appointment state gets exactly one answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from rapport.services.ingest.admission import Admission, AttendanceAdmission, admit, admit_attendance, record_id
from rapport.services.ingest.mapping_commands import carry_out
from rapport.services.ingest.normalise import (
    AttendanceRejection,
    AttendanceResult,
    Rejection,
    TenantMapping,
    normalise,
    normalise_attendance,
)
from rapport.services.ingest.unit_of_work import AttendanceUnitOfWork, IngestUnitOfWork, MappingUnitOfWork
from rapport.shared.contracts.attendance import Attendance, AttendanceAccepted, AttendanceRejected, EpisodeEnding
from rapport.shared.contracts.questionnaire_mapping import ANSWER_VERB, QuestionnaireMappingAnswer
from rapport.shared.contracts.submission import Submission, SubmissionAccepted, SubmissionRejected
from rapport.shared.db.delivery import Outgoing
from rapport.shared.instruments import Registry
from rapport.shared.messaging import subjects
from rapport.shared.messaging.consumer import Inbound
from rapport.shared.messaging.publish import cloud_event
from rapport.shared.messaging.retry import PoisonMessage
from rapport.shared.metrics import attendance, submissions
from rapport.shared.settings import Settings

SERVICE = "ingest"
ANSWER = "submission.answer"  # accepted or rejected: one answer per submission, one id
ATTENDANCE_ANSWER = "attendance.answer"
MAPPING_ANSWER = "questionnaire-mapping.answer"


@dataclass
class Ingest:
    registry: Registry
    settings: Settings
    # Fixed mappings (tests); the tenants' imported Questionnaires are read per batch and come first.
    mappings: dict[str, TenantMapping] = field(default_factory=dict)

    async def __call__(self, uow: IngestUnitOfWork, messages: Sequence[Inbound]) -> None:
        mappings = {**self.mappings, **await uow.mappings.load({m.tenant for m in messages if m.tenant})}
        answers = [(m, self._normalise(m, uow.now, mappings)) for m in messages]
        valid = [s for _, results in answers for s in results if isinstance(s, Submission)]
        stored = await uow.submissions.load_stored([(s.tenant, s.submission_id) for s in valid])
        admitted: list[tuple[Submission, Admission]] = []
        for message, results in answers:
            for n, result in enumerate(results):
                part = Part(n + 1, len(results))
                if isinstance(result, Rejection):
                    uow.publish([_rejected(message, part, result)])
                    instrument = _instrument_label(result, self.registry)
                    uow.after_commit(submissions.labels(message.tenant, instrument, "rejected").inc)
                    continue
                key = (result.tenant, result.submission_id)
                admission = admit(result, stored.get(key))
                stored[key] = (admission.revision, admission.content_hash)
                if admission.changes_anything:
                    admitted.append((result, admission))
                uow.publish([_accepted(message, part, result, admission)])
                uow.after_commit(submissions.labels(result.tenant, result.instrument, "accepted").inc)
        await uow.submissions.save(admitted, uow.now)


    def _normalise(self, message: Inbound, now: datetime,
                   mappings: dict[str, TenantMapping]) -> list[Submission | Rejection]:
        if not message.tenant:
            # No tenant subject to answer on: the consumer dead-letters it with this reason.
            raise UnroutableSubmission("the subject does not name a valid tenant")
        return normalise(message.body, tenant=message.tenant, registry=self.registry,
                         mapping=mappings.get(message.tenant),
                         licensed=self.settings.licensed_for(message.tenant), now=now)


class UnroutableSubmission(PoisonMessage):
    """A message whose subject names no valid tenant: poison, dead-lettered."""


@dataclass(frozen=True)
class Part:
    number: int
    of: int


def _instrument_label(rejection: Rejection, registry: Registry) -> str:
    # A metric label: a registry instrument id or "unknown", never text from the input (cardinality, PHI).
    return rejection.instrument if rejection.instrument is not None and rejection.instrument in registry else "unknown"


def _accepted(message: Inbound, part: Part, submission: Submission, admission: Admission) -> Outgoing:
    data = SubmissionAccepted(
        submission=submission, revision=admission.revision, disposition=admission.disposition,
        inbound_message_id=message.message_id, inbound_part=part.number, inbound_parts=part.of,
    )
    return cloud_event(
        entity="submission", verb="accepted", service=SERVICE, tenant=submission.tenant,
        subject=subjects.outbound(submission.tenant, "submission", "accepted"),
        about=submission.submission_id, data=data, event_id=message.event_id(ANSWER, part.number),
    )


def _rejected(message: Inbound, part: Part, rejection: Rejection) -> Outgoing:
    data = SubmissionRejected(
        submission_id=rejection.submission_id, inbound_message_id=message.message_id,
        inbound_part=part.number, inbound_parts=part.of,
        source_format=rejection.source_format, problems=rejection.problems,
    )
    return cloud_event(
        entity="submission", verb="rejected", service=SERVICE, tenant=message.tenant,
        subject=subjects.outbound(message.tenant, "submission", "rejected"),
        about=rejection.submission_id, data=data, event_id=message.event_id(ANSWER, part.number),
    )


@dataclass
class AttendanceIntake:
    """Appointments and encounters on rapport.<tenant>.in.attendance: one answer per appointment state,
    the latest state of each appointment kept (an older one arriving late changes nothing)."""

    async def __call__(self, uow: AttendanceUnitOfWork, messages: Sequence[Inbound]) -> None:
        answers = [(m, self._normalise(m, uow.now)) for m in messages]
        valid = [a for _, results in answers for a in results if not isinstance(a, AttendanceRejection)]
        stored = await uow.appointments.load_stored([(a.tenant, record_id(a)) for a in valid])
        admitted: list[tuple[Attendance | EpisodeEnding, AttendanceAdmission]] = []
        for message, results in answers:
            for n, result in enumerate(results):
                part = Part(n + 1, len(results))
                if isinstance(result, AttendanceRejection):
                    uow.publish([_attendance_rejected(message, part, result)])
                    uow.after_commit(attendance.labels(message.tenant, "unknown", "rejected").inc)
                    continue
                key = (result.tenant, record_id(result))
                admission = admit_attendance(result, stored.get(key))
                if admission.changes_anything:
                    stored[key] = (admission.revision, admission.content_hash, result.recorded_at, result.version)
                    admitted.append((result, admission))
                uow.publish([_attendance_accepted(message, part, result, admission)])
                status = "ending" if isinstance(result, EpisodeEnding) else result.status
                uow.after_commit(attendance.labels(result.tenant, status, admission.disposition).inc)
        await uow.appointments.save(admitted, uow.now)

    def _normalise(self, message: Inbound, now: datetime) -> list[AttendanceResult]:
        if not message.tenant:
            raise UnroutableSubmission("the subject does not name a valid tenant")
        return normalise_attendance(message.body, tenant=message.tenant, now=now)


def _attendance_accepted(message: Inbound, part: Part, result: Attendance | EpisodeEnding,
                         admission: AttendanceAdmission) -> Outgoing:
    data = AttendanceAccepted(
        attendance=result if isinstance(result, Attendance) else None,
        ending=result if isinstance(result, EpisodeEnding) else None,
        revision=admission.revision, disposition=admission.disposition,
        inbound_message_id=message.message_id, inbound_part=part.number, inbound_parts=part.of,
    )
    return cloud_event(
        entity="attendance", verb="accepted", service=SERVICE, tenant=result.tenant,
        subject=subjects.outbound(result.tenant, "attendance", "accepted"), about=record_id(result), data=data,
        event_id=message.event_id(ATTENDANCE_ANSWER, part.number),
    )


def _attendance_rejected(message: Inbound, part: Part, rejection: AttendanceRejection) -> Outgoing:
    data = AttendanceRejected(
        appointment_id=rejection.appointment_id, inbound_message_id=message.message_id,
        inbound_part=part.number, inbound_parts=part.of, source_format=rejection.source_format,
        problems=rejection.problems,
    )
    return cloud_event(
        entity="attendance", verb="rejected", service=SERVICE, tenant=message.tenant,
        subject=subjects.outbound(message.tenant, "attendance", "rejected"), about=rejection.appointment_id,
        data=data, event_id=message.event_id(ATTENDANCE_ANSWER, part.number),
    )


@dataclass
class QuestionnaireMappingCommands:
    """list / store / remove a tenant's own Questionnaires, on rapport.<tenant>.in.questionnaire-mappings (the
    gateway's admin API): the batch's tenants' mappings read once, each command carried out in order, one
    answer per command. Ingest is the one writer of the mappings; it reads them with its next batch."""

    registry: Registry

    async def __call__(self, uow: MappingUnitOfWork, messages: Sequence[Inbound]) -> None:
        if any(not m.tenant for m in messages):
            raise UnroutableSubmission("the subject does not name a valid tenant")
        imported = await uow.mappings.imported({m.tenant for m in messages})
        for message in messages:
            outcome = carry_out(message.body, imported.get(message.tenant, []), self.registry, uow.now)
            imported[message.tenant] = outcome.imported
            if outcome.stored is not None:
                await uow.mappings.save(message.tenant, outcome.stored, uow.now)
            if outcome.removed is not None:
                await uow.mappings.remove(message.tenant, outcome.removed)
            uow.publish([_mapping_answer(message, outcome.answer)])


def _mapping_answer(message: Inbound, answer: QuestionnaireMappingAnswer) -> Outgoing:
    verb = ANSWER_VERB[answer.outcome]
    return cloud_event(
        entity="questionnaire-mapping", verb=verb, service=SERVICE, tenant=message.tenant,
        subject=subjects.outbound(message.tenant, "questionnaire-mapping", verb), about=answer.command_id,
        data=answer, event_id=message.event_id(MAPPING_ANSWER),
    )
