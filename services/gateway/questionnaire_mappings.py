"""A tenant's own Questionnaires (its questionnaire mappings) through the admin API, under /api/v1:

    GET    /questionnaire-mappings            the tenant's mappings
    GET    /questionnaire-mappings/{id}       one, with its linkIds and answer weights
    PUT    /questionnaire-mappings            a FHIR R4 Questionnaire stored as a mapping (201 imported, 200
                                              replaced: the one with the same url and version), or 422 with
                                              every problem, as `rapport questionnaires import` refuses it
    DELETE /questionnaire-mappings/{id}       204; nothing already accepted changes

Only the role `admin` (`manage_questionnaire_mappings`), for the token's tenant only: another tenant's
mapping is answered 404 like one that does not exist (as the notification routes answer), other roles 403.

The mappings are ingest's data, in ingest's tables: the gateway never reads or writes them. Each request is
a command on `rapport.<tenant>.in.questionnaire-mappings` that ingest carries out and answers on
`rapport.<tenant>.questionnaire-mapping.*` (the pattern of the alert commands, services/gateway/live.py),
waited for up to RAPPORT_GATEWAY_ANSWER_WAIT_SECONDS. A change not answered in time is 202: the broker keeps
the command and ingest carries it out; a read not answered in time is 503. Every request is audited
(services/gateway/audit.py): who, `manage_questionnaire_mappings`, the mapping's id and the status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any, Literal, Protocol

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from rapport.services.gateway.http import FHIR_TYPES, Gate, Refused
from rapport.services.gateway.live import acting_as
from rapport.services.gateway.records_api import Authenticate
from rapport.services.gateway.tokens import Principal
from rapport.shared.contracts.envelope import CloudEvent
from rapport.shared.contracts.questionnaire_mapping import (
    MappingShown,
    QuestionnaireMappingAnswer,
    QuestionnaireMappingCommand,
)
from rapport.shared.messaging import subjects
from rapport.shared.messaging.ingress import BrokerUnavailable, Ingress

log = logging.getLogger("rapport.gateway")

ACTION = "manage_questionnaire_mappings"
COMMAND_PREFIX = "http-mapping-"
RETRY_AFTER_SECONDS = 5
ENTITY = "questionnaire-mapping"


class Audit(Protocol):
    async def record(self, *, action: str, outcome: int, principal: Principal | None = None,
                     resource: str | None = None, request: Request | None = None, credential: str | None = None,
                     detail: str | None = None) -> None: ...


class Mappings(BaseModel):
    mappings: list[MappingShown]


class MappingCommander:
    """Sends a command to ingest and waits, bounded, for its answer. The tenant's answers are listened to
    (a plain subscription, so every gateway replica hears its own) from its first command on."""

    def __init__(self, ingress: Ingress, *, wait_seconds: float) -> None:
        self._ingress = ingress
        self.wait_seconds = wait_seconds
        self._listening: set[str] = set()
        self._subscribing: dict[str, asyncio.Lock] = {}
        self._waiting: dict[tuple[str, str], asyncio.Future[QuestionnaireMappingAnswer]] = {}

    async def _listen(self, tenant: str) -> None:
        if tenant in self._listening:
            return
        async with self._subscribing.setdefault(tenant, asyncio.Lock()):
            if tenant not in self._listening:
                await self._ingress.listen(subjects.outbound(tenant, ENTITY, "*"), self._on_answer)
                self._listening.add(tenant)

    def _on_answer(self, subject: str, body: bytes) -> None:
        tenant = subjects.tenant_of(subject)
        if tenant is None:
            return
        try:
            envelope = CloudEvent.model_validate_json(body)
            answer = QuestionnaireMappingAnswer.model_validate(envelope.data)
        except ValidationError:
            log.warning("a questionnaire-mapping answer could not be read", extra={"subject": subject})
            return
        if envelope.tenant != tenant or answer.command_id is None:
            return
        future = self._waiting.get((tenant, answer.command_id))
        if future is not None and not future.done():
            future.set_result(answer)

    async def send(self, principal: Principal, action: Literal["list", "store", "remove"], *,
                   questionnaire: dict[str, Any] | None = None, instrument: str | None = None,
                   mapping_id: str | None = None, new_id: Callable[[], str] | None = None,
                   ) -> QuestionnaireMappingAnswer | None:
        """Ingest's answer, or None when none came within the wait (the command is kept by the broker and
        will be carried out). Raises BrokerUnavailable when nothing was sent, Refused(413) when the command
        would be larger than the broker takes."""
        tenant = principal.tenant
        await self._listen(tenant)
        command = QuestionnaireMappingCommand(
            command_id=(new_id or _new_command_id)(), action=action, by=acting_as(principal),
            questionnaire=questionnaire, instrument=instrument, mapping_id=mapping_id)
        body = json.dumps(command.model_dump(mode="json", exclude_none=True)).encode()
        limit = self._ingress.max_payload()
        if len(body) > limit:
            raise Refused(413, "too_large", f"the Questionnaire is over the broker's limit of {limit} bytes")
        key = (tenant, command.command_id)
        self._waiting[key] = asyncio.get_running_loop().create_future()
        try:
            await self._ingress.publish(subjects.questionnaire_mappings_in(tenant), body,
                                        message_id=command.command_id)
            return await asyncio.wait_for(asyncio.shield(self._waiting[key]), self.wait_seconds)
        except TimeoutError:
            return None
        finally:
            self._waiting.pop(key, None)


def _new_command_id() -> str:
    return f"{COMMAND_PREFIX}{uuid.uuid4().hex}"


def questionnaire_mappings_router(commander: MappingCommander, gate: Gate, authenticate: Authenticate,
                                  audit: Audit) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["questionnaire mappings"])
    refusals: dict[int | str, dict[str, Any]] = {
        403: {"description": "the role may not manage questionnaire mappings (admin only)"},
        404: {"description": "no such mapping for this tenant"},
        503: {"description": "the broker is not available, or ingest did not answer a read in time"}}

    async def ask(request: Request, principal: Principal, resource: str, action: Literal["list", "store", "remove"],
                  **fields: Any) -> QuestionnaireMappingAnswer | None:
        try:
            return await commander.send(principal, action, **fields)
        except BrokerUnavailable:
            await audit.record(action=ACTION, outcome=503, principal=principal, request=request, resource=resource,
                               detail="broker_unavailable")
            raise Refused(503, "broker_unavailable", "the broker is not available; send the request again later",
                          headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None

    async def listed(request: Request, principal: Principal, resource: str) -> list[MappingShown]:
        answer = await ask(request, principal, resource, "list")
        if answer is None:
            await audit.record(action=ACTION, outcome=503, principal=principal, request=request, resource=resource,
                               detail="no_answer")
            raise Refused(503, "ingest_unavailable", f"ingest did not answer within {commander.wait_seconds:g} s; "
                          "ask again later", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        return answer.mappings

    @router.get("/questionnaire-mappings", response_model=Mappings, responses=refusals,
                summary="The tenant's own Questionnaires as ingest applies them")
    async def list_mappings(request: Request) -> Mappings:
        principal = await authenticate(request, ACTION)
        mappings = await listed(request, principal, "questionnaire-mappings")
        await audit.record(action=ACTION, outcome=200, principal=principal, request=request,
                           resource="questionnaire-mappings", detail=f"list {len(mappings)}")
        return Mappings(mappings=mappings)

    @router.get("/questionnaire-mappings/{mapping_id}", response_model=MappingShown, responses=refusals,
                summary="One mapping: its instrument, linkIds and answer weights")
    async def get_mapping(request: Request, mapping_id: str) -> MappingShown:
        principal = await authenticate(request, ACTION)
        resource = f"questionnaire-mapping/{mapping_id[:64]}"
        found = next((m for m in await listed(request, principal, resource) if m.mapping_id == mapping_id), None)
        await audit.record(action=ACTION, outcome=200 if found else 404, principal=principal, request=request,
                           resource=resource, detail="read")
        if found is None:
            raise Refused(404, "not_found", "no such questionnaire mapping")
        return found

    @router.put("/questionnaire-mappings", status_code=201, response_model=MappingShown, responses={
        **refusals, 200: {"description": "replaced the mapping with the same url and version"},
        202: {"description": "sent; ingest did not answer in time and will carry it out"},
        422: {"description": "not stored: every problem named"}},
        openapi_extra={"requestBody": {"required": True, "content": {"application/fhir+json": {
            "schema": {"type": "object", "description": "a FHIR R4 Questionnaire"}}}}},
        summary="Store a FHIR R4 Questionnaire as one of the tenant's mappings (upsert by url and version)")
    async def put_mapping(request: Request, instrument: str | None = Query(default=None, max_length=32)) -> Response:
        principal = await authenticate(request, ACTION)
        _body, document = await gate.body(request, FHIR_TYPES)
        answer = await ask(request, principal, "questionnaire-mappings", "store", questionnaire=document,
                           instrument=instrument)
        return await changed(request, principal, "questionnaire-mappings", answer, "store")

    @router.delete("/questionnaire-mappings/{mapping_id}", status_code=204, responses={
        **refusals, 202: {"description": "sent; ingest did not answer in time and will carry it out"}},
        summary="Delete one of the tenant's mappings; nothing already accepted changes")
    async def delete_mapping(request: Request, mapping_id: str) -> Response:
        principal = await authenticate(request, ACTION)
        resource = f"questionnaire-mapping/{mapping_id[:64]}"
        if not _is_mapping_id(mapping_id):
            await audit.record(action=ACTION, outcome=404, principal=principal, request=request, resource=resource,
                               detail="remove")
            raise Refused(404, "not_found", "no such questionnaire mapping")
        answer = await ask(request, principal, resource, "remove", mapping_id=mapping_id)
        return await changed(request, principal, resource, answer, "remove")

    async def changed(request: Request, principal: Principal, resource: str,
                      answer: QuestionnaireMappingAnswer | None, what: str) -> Response:
        if answer is None:
            await audit.record(action=ACTION, outcome=202, principal=principal, request=request, resource=resource,
                               detail=f"{what} pending")
            return JSONResponse({"status": "pending", "message": f"sent; ingest did not answer within "
                                 f"{commander.wait_seconds:g} s and will carry it out. GET the mappings for the "
                                 "outcome"}, 202)
        if answer.mappings and answer.outcome in ("imported", "replaced", "removed"):
            resource = f"questionnaire-mapping/{answer.mappings[0].mapping_id}"
        status = {"imported": 201, "replaced": 200, "removed": 204, "not_found": 404}.get(answer.outcome, 422)
        await audit.record(action=ACTION, outcome=status, principal=principal, request=request, resource=resource,
                           detail=f"{what} {answer.outcome}")
        if status == 204:
            return Response(status_code=204)
        if status == 404:
            raise Refused(404, "not_found", "no such questionnaire mapping")
        if status == 422:
            return JSONResponse({"status": "refused", "problems": [p.model_dump() for p in answer.problems]}, 422)
        return JSONResponse(answer.mappings[0].model_dump(mode="json"), status)

    return router


def _is_mapping_id(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)
