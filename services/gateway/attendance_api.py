"""Attendance through the HTTP door (issue 15 item 1): the routes that publish to
`rapport.<tenant>.in.attendance` and answer with ingest's `attendance.accepted|rejected`.

    POST /fhir/Appointment      an appointment's state (booked, fulfilled, noshow, cancelled, ...)
    POST /fhir/Encounter        a session's encounter (finished, cancelled, ...)
    POST /fhir/EpisodeOfCare    an episode's ending (finished or cancelled)
    POST /api/v1/attendance     the native attendance JSON, or the native ending JSON (README)

A Bundle of them goes to POST /fhir like any Bundle (http.py sends it to in.attendance when it holds
attendance and no submission; one mixing an Appointment with submissions is refused 422).

The same steps and status codes as submissions (http.py): token (401; 403 for any role but
integration) -> content type (415) -> size (413) -> JSON (400) -> this endpoint's resource (400) ->
an Idempotency-Key reused with another body (422) -> the message recorded (503) -> the broker (503)
-> ingest's answer (201 / 422, or 202 when none came within the wait, with a Location to poll). The
answers are kept like submissions' (gateway_answers), so a resend or a poll is answered as the first
request was. Each answer and refusal is in the audit trail as `record_attendance` (http.py's
`Submitting`): `appointment/<id>` or `ending/<episode id>`, never the body.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response

from rapport.services.gateway import fhir
from rapport.services.gateway.http import (
    _BODY_DOC,
    _HEADERS_DOC,
    _NATIVE_DOC,
    _RESPONSES,
    FHIR_TYPES,
    NATIVE_TYPES,
    RECORD_ATTENDANCE,
    Audit,
    Gate,
    Refused,
    Submitted,
    Submitting,
    _submit,
    fhir_answer,
    native_answer,
)
from rapport.services.gateway.intake import ATTENDANCE, Intake

SUMMARIES = {
    "Appointment": "Create an Appointment's state (attended, missed, cancelled, booked)",
    "Encounter": "Create an Encounter (a session that took place or was cancelled)",
    "EpisodeOfCare": "Create an EpisodeOfCare ending (finished: planned; cancelled: unplanned)",
}


def attendance_router(intake: Intake, gate: Gate, *, wait_seconds: float, audit: Audit | None = None) -> APIRouter:
    router = APIRouter()
    submitting = Submitting(audit)

    async def resource(request: Request, resource_type: str) -> Response:
        return await submitting(request, RECORD_ATTENDANCE, lambda: resource_work(request, resource_type))

    async def resource_work(request: Request, resource_type: str) -> Submitted:
        principal = await gate.principal(request, "submit")
        body, document = await gate.body(request, FHIR_TYPES)
        found = document.get("resourceType")
        if found != resource_type:
            known = found == "Bundle" or found in fhir.SUBMISSION_TYPES or found in fhir.ATTENDANCE_TYPES
            where = "POST a Bundle to /fhir" if found == "Bundle" else f"POST a {found} to /fhir/{found}"
            raise Refused(400, "wrong_resource_type",
                          f"this endpoint takes a {resource_type}" + (f"; {where}" if known else ""),
                          field="resourceType")
        received = await _submit(intake, principal, body, request, resource_type, channel=ATTENDANCE)
        return Submitted(principal, received, fhir_answer(received, resource_type, wait_seconds), RECORD_ATTENDANCE)

    def creating(resource_type: str) -> Callable[[Request], Awaitable[Response]]:
        async def create(request: Request) -> Response:
            return await resource(request, resource_type)
        return create

    for resource_type, summary in SUMMARIES.items():
        router.add_api_route(f"/fhir/{resource_type}", creating(resource_type), methods=["POST"], tags=["fhir"],
                             status_code=201, responses=_RESPONSES, summary=summary,
                             name=f"create_{resource_type.lower()}",
                             openapi_extra={"requestBody": _BODY_DOC, "parameters": _HEADERS_DOC})

    @router.post("/api/v1/attendance", tags=["native"], status_code=201, responses=_RESPONSES,
                 openapi_extra={"requestBody": _NATIVE_DOC, "parameters": _HEADERS_DOC},
                 summary="A native attendance JSON (an appointment's state, or an episode's ending; README)")
    async def native(request: Request) -> Response:
        return await submitting(request, RECORD_ATTENDANCE, lambda: native_work(request))

    async def native_work(request: Request) -> Submitted:
        principal = await gate.principal(request, "submit")
        body, document = await gate.body(request, NATIVE_TYPES)
        if "resourceType" in document:
            raise Refused(400, "wrong_format", "a FHIR resource: POST it under /fhir", field="resourceType")
        received = await _submit(intake, principal, body, request, "native", channel=ATTENDANCE)
        return Submitted(principal, received, native_answer(received, wait_seconds), RECORD_ATTENDANCE)

    return router
