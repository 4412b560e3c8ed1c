"""Composition root of the ingest service: `rapport serve ingest`."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from rapport.services.ingest.handlers import SERVICE, AttendanceIntake, Ingest, QuestionnaireMappingCommands
from rapport.services.ingest.models import inbox, outbox
from rapport.services.ingest.unit_of_work import AttendanceUnitOfWork, IngestUnitOfWork, MappingUnitOfWork
from rapport.shared.contracts.attendance import AttendanceAccepted, AttendanceRejected
from rapport.shared.contracts.questionnaire_mapping import QuestionnaireMappingAnswer
from rapport.shared.contracts.submission import SubmissionAccepted, SubmissionRejected
from rapport.shared.instruments import load_registry
from rapport.shared.messaging import subjects
from rapport.shared.service import ServiceRuntime
from rapport.shared.settings import Settings


def build(settings: Settings, broker_url: str) -> tuple[ServiceRuntime, AsgiFastStream]:
    runtime = ServiceRuntime(SERVICE, settings, broker_url, inbox=inbox, outbox=outbox)
    registry = load_registry()
    runtime.subscribe(
        subjects.INBOUND_SUBMISSIONS, "ingest-v2", Ingest(registry, settings), unit_of_work=IngestUnitOfWork.on,
        description="FHIR R4 QuestionnaireResponse, Bundle, Observation, or native JSON submissions",
    )
    runtime.publishes("rapport.{tenant}.submission.accepted", SubmissionAccepted,
                      description="The submission is stored and goes on to scoring")
    runtime.publishes("rapport.{tenant}.submission.rejected", SubmissionRejected,
                      description="Not stored: every problem named (field, code, message, expected)")
    runtime.subscribe(
        subjects.INBOUND_ATTENDANCE, "ingest-attendance-v1", AttendanceIntake(), unit_of_work=AttendanceUnitOfWork.on,
        description="FHIR R4 Appointment, Encounter, a Bundle of them, or native attendance JSON",
    )
    runtime.publishes("rapport.{tenant}.attendance.accepted", AttendanceAccepted,
                      description="The appointment's state is stored (or is older than the stored one: outdated)")
    runtime.publishes("rapport.{tenant}.attendance.rejected", AttendanceRejected,
                      description="Not stored: every problem named (field, code, message, expected)")
    runtime.subscribe(
        subjects.INBOUND_QUESTIONNAIRE_MAPPINGS, "ingest-questionnaire-mappings-v1",
        QuestionnaireMappingCommands(registry), unit_of_work=MappingUnitOfWork.on,
        description="list / store / remove a tenant's own Questionnaires (the gateway's admin API)",
    )
    for verb, said in (("listed", "the tenant's questionnaire mappings"),
                       ("stored", "a Questionnaire stored as a mapping (imported or replaced); ingest reads it "
                                  "with its next batch"),
                       ("removed", "a mapping deleted; nothing already accepted changes"),
                       ("rejected", "nothing changed: the Questionnaire's problems, or no such mapping")):
        runtime.publishes(f"rapport.{{tenant}}.questionnaire-mapping.{verb}", QuestionnaireMappingAnswer,
                          description=said)
    return runtime, runtime.asgi()
