"""Composition root of the gateway: `rapport serve gateway`.

One process serves the HTTP routes (FastAPI: FHIR at /fhir, native and the alert and record API at
/api/v1) and, like every service, /healthz, /readyz and /metrics with its broker and consumer
lifecycle (ServiceRuntime). Its consumers keep its read models (handlers.py): ingest's answers, so a
resend is answered like the first request (attendance's too); the alert transitions, the scores and
each episode's attendance summary, for the API.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from faststream.asgi import AsgiFastStream
from faststream.asgi.types import Receive, Scope, Send

from rapport.services.gateway.answers import AnswerWaiter
from rapport.services.gateway.attendance_api import attendance_router
from rapport.services.gateway.dashboard import dashboard
from rapport.services.gateway.handlers import (
    SERVICE,
    KeepAlerts,
    KeepAnswers,
    KeepAttendance,
    KeepScores,
    answer_to_another,
)
from rapport.services.gateway.http import Gate, create_app
from rapport.services.gateway.intake import Intake, body_limit
from rapport.services.gateway.live import AlertCommander, AlertFeed
from rapport.services.gateway.models import inbox, outbox
from rapport.services.gateway.notifications.wiring import notification_delivery
from rapport.services.gateway.questionnaire_mappings import MappingCommander, questionnaire_mappings_router
from rapport.services.gateway.records import Records
from rapport.services.gateway.records_api import records_router
from rapport.services.gateway.repository import StoredAnswers, forget_old_answers
from rapport.services.gateway.tokens import TokenVerifier, verifier_for
from rapport.services.gateway.worklist_records import RecordsAlerts
from rapport.shared.db.group_commit import GroupCommit
from rapport.shared.messaging import subjects
from rapport.shared.messaging.ingress import BrokerUnavailable, Ingress
from rapport.shared.periodic import Periodic
from rapport.shared.service import VERSION, ServiceRuntime
from rapport.shared.settings import Settings
from rapport.shared.unit_of_work import SessionUnitOfWork

log = logging.getLogger("rapport.gateway")

SUBMISSION_ANSWERS = f"{subjects.PREFIX}.*.submission.>"
ALERT_TRANSITIONS = f"{subjects.PREFIX}.*.alert.*"
COMPUTED_SCORES = f"{subjects.PREFIX}.*.score.computed"
# accepted and rejected (ingest's answers) and recorded (the alerts service's summary): one consumer,
# because the gateway's consumers share one inbox and none may be given another's events
ATTENDANCE = f"{subjects.PREFIX}.*.attendance.*"


class GatewayAsgi:
    """HTTP to the FastAPI routes, except the service routes (/healthz, /readyz, /metrics) and the
    lifespan (broker, consumer, background tasks), which are FastStream's as in every service."""

    def __init__(self, service: AsgiFastStream, http: FastAPI) -> None:
        self.service = service
        self.http = http
        self._service_paths = {path for path, _ in service.routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or scope.get("path") in self._service_paths:
            await self.service(scope, receive, send)
        else:
            await self.http(scope, receive, send)


# The answers and scores the gateway keeps are read by nobody waiting on them (a request's answer
# comes live; a resend or a poll reads them a moment later, the charts later still), so their
# consumers gather a quarter second's worth into one transaction: at 50 submissions/s, batches of one
# were two write transactions per submission on the embedded SQLite file's one write lock. The alert
# transitions are not delayed: the worklist reads them as soon as the live feed names them.
READ_MODEL_BATCH_WAIT_SECONDS = 0.25


def build(settings: Settings, broker_url: str, *, verifier: TokenVerifier | None = None,
          ) -> tuple[ServiceRuntime, GatewayAsgi]:
    verifier = verifier or verifier_for(settings)
    runtime = ServiceRuntime(SERVICE, settings, broker_url, inbox=inbox, outbox=outbox)
    runtime.subscribe(
        SUBMISSION_ANSWERS, "gateway-answers-v1", KeepAnswers(), unit_of_work=SessionUnitOfWork,
        description="ingest's answers, kept so a resend over HTTP gets the answer the first request got",
        passes_over=answer_to_another, batch_wait_seconds=READ_MODEL_BATCH_WAIT_SECONDS,
    )
    runtime.subscribe(
        ALERT_TRANSITIONS, "gateway-alerts-v1", KeepAlerts(), unit_of_work=SessionUnitOfWork,
        description="every alert transition, kept as the alert API and the worklist show it",
    )
    runtime.subscribe(
        COMPUTED_SCORES, "gateway-scores-v1", KeepScores(), unit_of_work=SessionUnitOfWork,
        description="every computed score, kept for the record API and the client view's charts",
        batch_wait_seconds=READ_MODEL_BATCH_WAIT_SECONDS,
    )
    runtime.subscribe(
        ATTENDANCE, "gateway-attendance-v1", KeepAttendance(), unit_of_work=SessionUnitOfWork,
        description="ingest's answers to attendance (kept for resends over HTTP) and each episode's attendance "
                    "summary as the alerts service counts it (for the record API)",
        passes_over=answer_to_another,
    )
    ingress = Ingress(runtime.connection, timeout=settings.publish_timeout_seconds)
    writes = GroupCommit(runtime.sessions)  # the requests' records of messages and audit rows, together
    intake = Intake(ingress, AnswerWaiter(ingress), StoredAnswers(runtime.sessions, writes),
                    wait_seconds=settings.gateway_answer_wait_seconds)

    def limit() -> int:
        try:
            return body_limit(settings.gateway_max_body_bytes, ingress.max_payload())
        except BrokerUnavailable:  # not connected yet: the broker's default max_payload, 1 MiB
            return body_limit(settings.gateway_max_body_bytes, 1024 * 1024)

    async def prune() -> None:
        async with runtime.sessions() as session, session.begin():
            await forget_old_answers(session, runtime.clock() - settings.inbox_retention)

    gate = Gate(verifier, limit)
    feed = AlertFeed(ingress)
    commander = AlertCommander(ingress, feed, wait_seconds=settings.gateway_answer_wait_seconds)
    pages = dashboard(settings, runtime.sessions, gate, clock=runtime.clock,  # sign-in, audit, pages
                      alerts=RecordsAlerts(Records(runtime.sessions), commander, feed), writes=writes)
    notifications = notification_delivery(runtime, settings, gate, audit=pages.audit)  # webhooks, e-mail
    records = records_router(Records(runtime.sessions, runtime.clock), feed, commander, pages.sign_in.principal_of,
                             pages.audit)
    mappings = questionnaire_mappings_router(
        MappingCommander(ingress, wait_seconds=settings.gateway_answer_wait_seconds), gate,
        pages.sign_in.principal_of, pages.audit)
    http = create_app(intake, gate, version=VERSION, wait_seconds=settings.gateway_answer_wait_seconds,
                      audit=pages.audit,  # every submitting request's answer is audited
                      routers=[attendance_router(intake, gate, wait_seconds=settings.gateway_answer_wait_seconds,
                                                 audit=pages.audit),
                               notifications.router, records, mappings, *pages.routers])
    service = runtime.asgi(background=[Periodic("gateway-answer-pruning", 3600, prune), *pages.background])
    return runtime, GatewayAsgi(service, http)
