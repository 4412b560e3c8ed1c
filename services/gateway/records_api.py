"""The alert and record API under /api/v1, for people (role clinician or lead):

    GET  /alerts                      filters status, kind, severity, clinician, client; offset/limit
    GET  /alerts/{id}                 with its evidence and every transition
    POST /alerts/{id}/acknowledge     carried out by the alerts service over the broker; 200 with the
    POST /alerts/{id}/resolve         alert as it left it, 409 when it changed nothing (and why), 202
                                      when the alerts service did not answer within the wait
    GET  /clients/{client}/episodes
    GET  /clients/{client}/episodes/{episode}/scores
    GET  /events                      Server-Sent Events: the caller's alert transitions, live; each
                                      event's id is its place in the broker's stream, so a caller that
                                      reconnects with Last-Event-ID is first given what it missed

A clinician sees only the alerts and episodes that name them; another clinician's or another
tenant's are answered 404 like ones that do not exist. Reads come from the gateway's read model.
Every answered read and command is a row of the audit trail (who, what ids, the status); refusals
before it (401, 403) are recorded by the sign-in check.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from rapport.services.gateway.audit import AuditTrail
from rapport.services.gateway.http import Refused
from rapport.services.gateway.live import (
    RESUME_LIMIT,
    AlertCommander,
    AlertFeed,
    CannotResume,
    CommandRefused,
    LiveTransition,
    shown,
)
from rapport.services.gateway.records import (
    MAX_PAGE,
    AlertFilters,
    AlertPage,
    AlertShown,
    EpisodeRecord,
    EpisodeShown,
    Records,
    Viewer,
)
from rapport.services.gateway.tokens import Principal
from rapport.shared.messaging.ingress import BrokerUnavailable


class Authenticate(Protocol):
    """Who is calling, allowed to do `action`: the bearer token, else the dashboard's session cookie
    (signin.SignIn.principal_of); a refusal is audited under `audited_as`."""

    def __call__(self, request: Request, action: str, *, audited_as: str | None = None) -> Awaitable[Principal]: ...
HEARTBEAT_SECONDS = 15.0
RETRY_AFTER_SECONDS = 5


class Resolve(BaseModel):
    reason: str = Field(min_length=1, max_length=500, description="why it is resolved by hand (required)")


class Acknowledge(BaseModel):
    reason: str | None = Field(default=None, max_length=500)


def _not_found(what: str) -> Refused:
    return Refused(404, "not_found", f"no such {what}")


def records_router(records: Records, feed: AlertFeed, commander: AlertCommander, authenticate: Authenticate,
                   audit: AuditTrail, *, heartbeat_seconds: float = HEARTBEAT_SECONDS) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["alerts and records"])
    not_found: dict[int | str, dict[str, Any]] = {404: {"description": "no such alert or client for this caller"}}

    @router.get("/alerts", response_model=AlertPage, summary="The caller's alerts, most urgent first")
    async def list_alerts(
        request: Request,
        status: Annotated[list[Literal["open", "acknowledged", "resolved"]] | None, Query()] = None,
        kind: Annotated[list[str] | None, Query()] = None,
        severity: Annotated[list[Literal["critical", "high", "medium", "low"]] | None, Query()] = None,
        clinician: str | None = None, client: str | None = None,
        offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    ) -> AlertPage:
        principal = await authenticate(request, "read_alerts")
        filters = AlertFilters(status=status or (), kind=kind or (), severity=severity or (),
                               clinician=clinician, client=client)
        page = await records.alerts(Viewer.of(principal), filters, offset=offset, limit=limit)
        await audit.record(action="read_alerts", outcome=200, principal=principal, request=request,
                           resource=f"client/{client}" if client else "alerts", detail=f"{len(page.alerts)} alerts")
        return page

    @router.get("/alerts/{alert_id}", response_model=AlertShown, responses=not_found,
                summary="One alert with its evidence and every transition")
    async def get_alert(request: Request, alert_id: str) -> AlertShown:
        principal = await authenticate(request, "read_alerts")
        found = await records.alert(Viewer.of(principal), alert_id)
        await audit.record(action="read_alerts", outcome=200 if found else 404, principal=principal, request=request,
                           resource=f"alert/{alert_id}")
        if found is None:
            raise _not_found("alert")
        return found

    async def command(request: Request, alert_id: str, action: Literal["acknowledge", "resolve"],
                      reason: str | None) -> Response:
        audited = f"{action}_alert"
        principal = await authenticate(request, "act_on_alerts", audited_as=audited)

        async def record(status: int, detail: str | None = None) -> None:
            await audit.record(action=audited, outcome=status, principal=principal, request=request,
                               resource=f"alert/{alert_id}", detail=detail)
        if await records.alert(Viewer.of(principal), alert_id) is None:
            await record(404)
            raise _not_found("alert")
        try:
            outcome = await commander.send(principal, alert_id, action, reason)
        except BrokerUnavailable:
            await record(503, "broker_unavailable")
            raise Refused(503, "broker_unavailable", "the broker is not available; send the command again later",
                          headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
        await record(202 if outcome is None else 409 if isinstance(outcome, CommandRefused) else 200,
                     "pending" if outcome is None else "changed_nothing" if isinstance(outcome, CommandRefused)
                     else None)
        if outcome is None:
            return JSONResponse({"status": "pending", "message": f"sent; the alerts service did not answer within "
                                 f"{commander.wait_seconds:g} s. GET the alert for its state"}, 202)
        if isinstance(outcome, CommandRefused):
            return JSONResponse({"status": "refused", "problems": [
                {"field": "", "code": "changed_nothing", "message": outcome.reason}]}, 409)
        return JSONResponse(shown(outcome).model_dump(mode="json"), 200)

    command_responses: dict[int | str, dict[str, Any]] = {
        **not_found, 202: {"description": "sent, no answer within the wait"},
        409: {"description": "the command changed nothing: why"}, 503: {"description": "broker not available"}}

    @router.post("/alerts/{alert_id}/acknowledge", response_model=AlertShown, responses=command_responses,
                 summary="Acknowledge an alert (the therapist has seen it)")
    async def acknowledge(request: Request, alert_id: str, body: Acknowledge | None = None) -> Response:
        return await command(request, alert_id, "acknowledge", body.reason if body else None)

    @router.post("/alerts/{alert_id}/resolve", response_model=AlertShown, responses=command_responses,
                 summary="Resolve an alert by hand, with the reason")
    async def resolve(request: Request, alert_id: str, body: Resolve) -> Response:
        return await command(request, alert_id, "resolve", body.reason)

    @router.get("/clients/{client_id}/episodes", response_model=list[EpisodeShown], responses=not_found,
                summary="The client's episodes the caller may see, the latest first")
    async def episodes(request: Request, client_id: str) -> list[EpisodeShown]:
        principal = await authenticate(request, "read_records")
        found = await records.episodes(Viewer.of(principal), client_id)
        await audit.record(action="read_records", outcome=200 if found else 404, principal=principal,
                           request=request, resource=f"client/{client_id}")
        if found is None:
            raise _not_found("client")
        return found

    @router.get("/clients/{client_id}/episodes/{episode_id}/scores", response_model=EpisodeRecord,
                responses=not_found, summary="The episode's scores with their change figures, and its alerts")
    async def scores(request: Request, client_id: str, episode_id: str) -> EpisodeRecord:
        principal = await authenticate(request, "read_records")
        found = await records.episode(Viewer.of(principal), client_id, episode_id)
        await audit.record(action="read_records", outcome=200 if found else 404, principal=principal,
                           request=request, resource=f"client/{client_id}/episode/{episode_id}")
        if found is None:
            raise _not_found("episode")
        return found

    @router.get("/events", summary="Server-Sent Events: the caller's alert transitions as they happen",
                response_class=StreamingResponse,
                responses={200: {"content": {"text/event-stream": {}}, "description":
                                 "`event: alert.raised|alert.updated|alert.resolved`, `id:` its place in the "
                                 "broker's stream, `data:` the alert as GET /alerts/{id} shows it (without "
                                 "transitions); a comment line as heartbeat. With `Last-Event-ID` (a browser's "
                                 "EventSource sends it when it reconnects), the events missed since come first "
                                 f"(at most {RESUME_LIMIT} of the tenant's, while the broker keeps them); when "
                                 "that cannot be done, `event: reset` says why (`too_old`, `unknown`) and the "
                                 "live events follow: read GET /alerts again"}})
    async def events(request: Request) -> StreamingResponse:
        principal = await authenticate(request, "watch_events")
        last_event_id = request.headers.get("last-event-id")
        await audit.record(action="watch_events", outcome=200, principal=principal, request=request,
                           resource="events", detail="resume" if last_event_id else None)
        return StreamingResponse(_sse(feed, Viewer.of(principal), request, heartbeat_seconds, last_event_id),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return router


def _event(item: LiveTransition) -> str:
    data = json.dumps(shown(item).model_dump(mode="json"))
    position = item.sequence if item.sequence is not None else item.event_id
    return f"id: {position}\nevent: alert.{item.verb}\ndata: {data}\n\n"


async def _sse(feed: AlertFeed, viewer: Viewer, request: Request, heartbeat_seconds: float,
               last_event_id: str | None = None) -> AsyncIterator[str]:
    """Live from the moment the stream is open; with `last_event_id`, first what the broker's stream
    holds since it (the live events already among them are not sent twice)."""
    stream = await feed.open(viewer)  # before the replay: nothing stored meanwhile falls between the two
    through = 0
    try:
        yield ": connected\n\n"
        if last_event_id is not None:
            try:
                missed = await feed.missed(viewer, last_event_id.strip())
            except CannotResume as refused:
                reset = {"reason": refused.reason, "message": "the events since this id cannot be given: read "
                         "GET /api/v1/alerts again; live events follow"}
                yield f"event: reset\ndata: {json.dumps(reset)}\n\n"
            except BrokerUnavailable:
                reset = {"reason": "unavailable", "message": "the broker cannot be read now: read GET "
                         "/api/v1/alerts again; live events follow"}
                yield f"event: reset\ndata: {json.dumps(reset)}\n\n"
            else:
                through = missed.through
                for earlier in missed.transitions:
                    yield _event(earlier)
        while not await request.is_disconnected():
            try:
                item = await asyncio.wait_for(stream.queue.get(), heartbeat_seconds)
            except TimeoutError:
                yield ": heartbeat\n\n"
                continue
            if item is None:
                yield "event: overflow\ndata: {}\n\n"
                return
            if item.sequence is not None and item.sequence <= through:
                continue  # given already, from the replay
            yield _event(item)
    finally:
        feed.close(stream)
