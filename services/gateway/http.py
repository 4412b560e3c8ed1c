"""The HTTP routes: FHIR R4 REST at /fhir, the native twin at /api/v1 (OpenAPI at /api/v1/openapi.json).

Every submitting request goes through the same steps, each with its own refusal:
token (401, or 403 for a role that may not submit) -> content type (415) -> size (413) -> JSON
(400) -> what the endpoint takes (400; a transaction Bundle 422) -> an Idempotency-Key first sent
with another body (422) -> the message recorded (503 when the database does not take it) -> the
broker takes it (503 with Retry-After when it does not) -> ingest's answer (201 / 422, or 202 when
none came in time, with a `Location` to poll: GET /api/v1/messages/{id}, or its FHIR twin
GET /fhir/_messages/{id}).
Refusals under /fhir are OperationOutcomes, under /api/v1 the native `problems` list. Nothing from
the body is repeated in a refusal or a log line; ingest's problems name fields, codes and items.

Every answer of a submitting route, refusals included, is in the audit trail (`Submitting`): who
(the token's subject and role; nobody for a 401), the action (`submit`, `record_attendance`), what
as ids (`submission/<id>`, one row per answered part; `message/<id>` while pending), the status
answered and, for anything not accepted, a short code. The rows are on disk before the answer goes
out.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

import jwt
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rapport.services.gateway import fhir
from rapport.services.gateway.answers import Answer
from rapport.services.gateway.intake import (
    ATTENDANCE,
    GATEWAY_MESSAGE_PREFIX,
    IDEMPOTENCY_KEY,
    SUBMISSIONS,
    Channel,
    IdempotencyKeyReused,
    Intake,
    Received,
    RecordUnavailable,
    message_id_for,
)
from rapport.services.gateway.oidc import IssuerUnavailable
from rapport.services.gateway.subscription_hook import NotificationRefused, read_notification
from rapport.services.gateway.tokens import InvalidToken, Principal, TokenVerifier
from rapport.shared.contracts.problems import Problem
from rapport.shared.messaging.ingress import BrokerUnavailable
from rapport.shared.metrics import REGISTRY

log = logging.getLogger("rapport.gateway")

FHIR_TYPES = ("application/fhir+json", "application/json")
NATIVE_TYPES = ("application/json",)
RETRY_AFTER_SECONDS = 5
REALM = 'Bearer realm="rapport"'
# what each role may do. Which records a clinician may see within it (their own clients) is the
# records' own check, answered 404 like a record that does not exist.
PERMISSIONS: dict[str, frozenset[str]] = {
    "integration": frozenset({"submit", "read_submissions"}),
    "clinician": frozenset({"read_alerts", "act_on_alerts", "read_records", "watch_events", "manage_own_webhooks",
                            "use_dashboard"}),
    "lead": frozenset({"read_alerts", "act_on_alerts", "read_records", "watch_events", "read_figures",
                       "use_dashboard"}),
    "admin": frozenset({"manage_webhooks", "read_audit", "read_instruments", "use_dashboard", "manage_sessions",
                       "manage_questionnaire_mappings"}),
}

requests_total = Counter("rapport_gateway_requests_total", "HTTP requests answered by the gateway",
                         ["route", "status"], registry=REGISTRY)
request_seconds = Histogram("rapport_gateway_request_seconds", "From the request to its answer",
                            ["route"], registry=REGISTRY,
                            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


class Measured:
    """Counts and times every request up to its response's start (an event stream's too), as plain
    ASGI: Starlette's BaseHTTPMiddleware, which this replaces, cost a task group and two memory
    streams per request, about a tenth of the gateway's CPU on the submission path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answered = False

        def observe(status: int) -> None:
            name = getattr(scope.get("route"), "path", "unmatched")  # the router sets it on this scope
            requests_total.labels(name, str(status)).inc()
            request_seconds.labels(name).observe(time.perf_counter() - started)

        async def sending(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and not answered:
                answered = True
                observe(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            if not answered:
                observe(500)


def may(principal: Principal, action: str) -> bool:
    return principal.role is not None and action in PERMISSIONS.get(principal.role, frozenset())


class Refused(Exception):
    """A request answered without publishing anything."""

    def __init__(self, status: int, code: str, message: str, *, field: str = "",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers or {}


def _fhir(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status, headers=headers, media_type=f"{fhir.FHIR_JSON}; charset=utf-8")


def _native(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status, headers=headers)


def refusal_response(path: str, refused: Refused) -> Response:
    if path.startswith("/fhir"):
        return _fhir(refused.status, fhir.refusal(refused.code, refused.message), refused.headers)
    problem = Problem(field=refused.field, code=refused.code, message=refused.message)
    return _native(refused.status, {"status": "refused", "problems": [problem.model_dump()]}, refused.headers)


class Gate:
    """The checks before anything is published."""

    # a token verified once is taken again without its signature checked, until the sooner of its
    # own exp and this many seconds: an integration engine sends one token with every request, and
    # the signature check was a twelfth of the gateway's CPU per submission
    VERIFIED_FOR_SECONDS = 60.0
    VERIFIED_KEPT = 1024

    def __init__(self, verifier: TokenVerifier, body_limit: Callable[[], int]) -> None:
        self.verifier = verifier
        self.body_limit = body_limit
        self._verified: dict[str, tuple[Principal, float]] = {}

    async def _verify(self, token: str) -> Principal:
        now = time.time()
        known = self._verified.get(token)
        if known is not None and now < known[1]:
            return known[0]
        principal = await self.verifier.verify(token)
        try:
            expires = float(jwt.decode(token, options={"verify_signature": False})["exp"])
        except (jwt.PyJWTError, KeyError, TypeError, ValueError):
            return principal  # verified, but with no exp to keep it by
        if len(self._verified) >= self.VERIFIED_KEPT:
            self._verified.clear()
        self._verified[token] = (principal, min(expires, now + self.VERIFIED_FOR_SECONDS))
        return principal

    async def principal(self, request: Request, action: str) -> Principal:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(401, "unauthenticated", "a bearer token is required", field="Authorization",
                          headers={"WWW-Authenticate": REALM})
        try:
            principal = await self._verify(token.strip())
        except InvalidToken as error:
            log.info("bearer token refused (%s)", error)
            raise Refused(401, "unauthenticated", "a valid bearer token is required", field="Authorization",
                          headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'}) from None
        except IssuerUnavailable:
            log.warning("the identity provider's keys could not be fetched")
            raise Refused(503, "identity_provider_unavailable", "tokens cannot be checked now; try again later",
                          headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
        request.state.principal = principal  # who was refused, for the audit trail of a refusal
        if not may(principal, action):
            raise Refused(403, "forbidden", f"the role {principal.role or '(none)'} may not {action}")
        return principal

    async def body(self, request: Request, media_types: Sequence[str]) -> tuple[bytes, dict[str, Any]]:
        media, _, parameters = request.headers.get("content-type", "").partition(";")
        charset = next((v.strip().strip('"').lower() for k, _, v in (p.partition("=") for p in parameters.split(";"))
                        if k.strip().lower() == "charset"), "utf-8")
        if media.strip().lower() not in media_types or charset not in ("utf-8", "utf8"):
            raise Refused(415, "unsupported_media_type", f"Content-Type must be {' or '.join(media_types)} "
                          "(UTF-8)", field="Content-Type")
        limit = self.body_limit()
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise Refused(413, "too_large", f"the body is over the limit of {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Refused(413, "too_large", f"the body is over the limit of {limit} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            document = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise Refused(400, "invalid_json", "the body is not UTF-8 JSON") from None
        if not isinstance(document, dict):
            raise Refused(400, "not_an_object", "the body is not a JSON object")
        return body, document


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise Refused(400, "invalid_idempotency_key", "Idempotency-Key must be 1-255 visible ASCII characters",
                      field="Idempotency-Key")
    return key


async def _submit(intake: Intake, principal: Principal, body: bytes, request: Request, form: str, *,
                  channel: Channel = SUBMISSIONS) -> Received:
    message_id = message_id_for(principal.tenant, body, idempotency_key(request), channel)
    try:
        return await intake.submit(principal.tenant, body, message_id, form, channel=channel)
    except IdempotencyKeyReused:
        raise Refused(422, "idempotency_key_reused", "this Idempotency-Key was sent before with another body; "
                      "send a new key for a new body, or the first body again for its answer",
                      field="Idempotency-Key") from None
    except RecordUnavailable:
        raise Refused(503, "store_unavailable", "the gateway cannot record the message now: resend the same "
                      "request later (safe whether or not it was published)",
                      headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
    except BrokerUnavailable as error:
        log.warning("broker did not take a submission (%s)", error, extra={"message_id": message_id})
        raise Refused(503, "broker_unavailable", "the broker is not available; resend the same request later",
                      headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None


# the audit trail of submitting routes

SUBMIT = "submit"
RECORD_ATTENDANCE = "record_attendance"


class Audit(Protocol):
    """The audit trail's face for the submitting routes (audit.py, `AuditTrail.record_each`): one row
    per (resource, detail), written together, committed when it returns."""

    async def record_each(self, *, action: str, outcome: int, principal: Principal | None, request: Request,
                          credential: str, parts: Sequence[tuple[str | None, str | None]]) -> None: ...


@dataclass(frozen=True)
class Submitted:
    principal: Principal
    received: Received
    response: Response
    action: str
    # the audit rows when they are not the answered parts (a notification that carried nothing)
    parts: list[tuple[str | None, str | None]] | None = None


def audited_parts(received: Received) -> list[tuple[str | None, str | None]]:
    """(resource, detail) per answered part: the stored record's id (never a payload) and `accepted`,
    or a rejection's first problem code; one `message/<id>` row, `pending`, before ingest answered."""
    if received.answers is None:
        return [(f"message/{received.message_id}", "pending")]
    return [(f"{a.record}/{a.submission_id}" if a.submission_id else f"message/{received.message_id}",
             "accepted" if a.outcome == "accepted" else (a.problems[0].code if a.problems else "rejected"))
            for a in received.answers]


class Submitting:
    """Runs a submitting route's work and writes its audit rows: the answer's, or the refusal's (with
    its code, and whoever the token named when it was valid). An answer whose rows cannot be written
    is not given: 503, and a resend of the same request (recognised, never stored twice) gets it."""

    def __init__(self, audit: Audit | None) -> None:
        self.audit = audit

    async def __call__(self, request: Request, action: str, work: Callable[[], Awaitable[Submitted]]) -> Response:
        if self.audit is None:
            return (await work()).response
        try:
            done = await work()
        except Refused as refused:
            try:
                await self.audit.record_each(action=action, outcome=refused.status, request=request,
                                             credential="bearer", principal=getattr(request.state, "principal", None),
                                             parts=[(None, refused.code)])
            except Exception as error:  # the refusal stands; its row is what is lost
                log.warning("a refused submission's audit row could not be written (%s)", type(error).__name__)
            raise
        try:
            await self.audit.record_each(action=done.action, outcome=done.response.status_code,
                                         principal=done.principal, request=request, credential="bearer",
                                         parts=done.parts if done.parts is not None else audited_parts(done.received))
        except Exception as error:
            log.warning("a submission's audit rows could not be written (%s)", type(error).__name__,
                        extra={"message_id": done.received.message_id})
            raise Refused(503, "audit_unavailable", "the answer cannot be recorded in the audit trail now: resend "
                          "the same request later (it is recognised, and answered as this one would have been)",
                          headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
        return done.response


# answers


def _headers(received: Received) -> dict[str, str]:
    return {"Rapport-Message-Id": received.message_id}


def native_status_url(message_id: str) -> str:
    return f"/api/v1/messages/{quote(message_id, safe=':')}"


def fhir_status_url(message_id: str) -> str:
    return f"/fhir/_messages/{quote(message_id, safe=':')}"


def _pending_words(wait_seconds: float | None) -> str:
    waited = "" if wait_seconds is None else f" within {wait_seconds:g} s"
    return (f"received and stored by the broker; ingest has not answered{waited}. GET the Location for the "
            "answer (or resend the same request: same Idempotency-Key, or the same body)")


def fhir_body(received: Received, form: str, wait_seconds: float | None) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The status, OperationOutcome or batch-response, and headers a FHIR request of `form` (its
    resource type; `native` for a message sent to the native twin) is answered with."""
    answers = received.answers
    headers = _headers(received)
    if answers is None:
        headers["Location"] = fhir_status_url(received.message_id)
        return 202, fhir.refusal("pending", _pending_words(wait_seconds), severity="information"), headers
    if form == "Bundle":
        whole = len(answers) == 1 and answers[0].outcome == "rejected" and not any(
            p.field.startswith("entry[") for p in answers[0].problems)
        if whole:  # the Bundle itself was refused (empty, unreadable): no entry to answer
            return 422, fhir.outcome_of(answers[0], "Bundle"), headers
        return 200, fhir.batch_response(answers), headers
    resource_type = None if form == "native" else form
    [answer] = answers[:1]
    if answer.outcome == "rejected":
        return 422, fhir.outcome_of(answer, resource_type), headers
    headers["ETag"] = f'W/"{answer.revision}"'
    if resource_type is not None:
        headers["Location"] = fhir.location(answer, resource_type)
    return 201, fhir.outcome_of(answer, resource_type), headers


def fhir_answer(received: Received, resource_type: str, wait_seconds: float) -> Response:
    return _fhir(*fhir_body(received, resource_type, wait_seconds))


# what the stored record's id is called in a native answer
NATIVE_ID = {"submission": "submission_id", "appointment": "appointment_id", "ending": "episode_id"}


def native_part(answer: Answer) -> dict[str, Any]:
    named = {NATIVE_ID[answer.record]: answer.submission_id}
    if answer.outcome == "rejected":
        return {"status": "rejected", **named, "problems": [p.model_dump() for p in answer.problems]}
    instrument = {"instrument": answer.instrument} if answer.record == "submission" else {}
    return {"status": "accepted", **named, **instrument, "revision": answer.revision,
            "disposition": answer.disposition, "warnings": [p.model_dump() for p in answer.problems]}


def native_body(received: Received, wait_seconds: float | None) -> tuple[int, dict[str, Any], dict[str, str]]:
    answers = received.answers
    headers = _headers(received)
    if answers is None:
        headers["Location"] = native_status_url(received.message_id)
        return 202, {"status": "pending", "message_id": received.message_id,
                     "message": _pending_words(wait_seconds)}, headers
    if len(answers) == 1:
        status = 201 if answers[0].outcome == "accepted" else 422
        return status, {"message_id": received.message_id, **native_part(answers[0])}, headers
    return 200, {"message_id": received.message_id, "answers": [native_part(a) for a in answers]}, headers


def native_answer(received: Received, wait_seconds: float) -> Response:
    return _native(*native_body(received, wait_seconds))


def polled(answer: tuple[int, dict[str, Any], dict[str, str]]) -> tuple[int, dict[str, Any], dict[str, str]]:
    """A poll's answer: 202 while pending (its Location is the poll URL itself); once answered, 200
    with the body the request would have got, that request's status in `Rapport-Answer-Status`
    and no Location (the 201's Location names the stored resource, not this answer)."""
    status, body, headers = answer
    if status == 202:
        return 202, body, headers | {"Retry-After": "1"}
    headers.pop("Location", None)
    return 200, body, headers | {"Rapport-Answer-Status": str(status)}


# the app

_BODY_DOC = {"required": True, "content": {t: {"schema": {"type": "object"}} for t in FHIR_TYPES}}
_NATIVE_DOC = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
_HEADERS_DOC = [{"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"},
                 "description": "makes a resend recognised (1-255 visible ASCII); without it, the same body is"}]
_RESPONSES: dict[int | str, dict[str, Any]] = {
    201: {"description": "accepted"},
    202: {"description": "no answer within the wait: GET the Location (or resend the same request) for it"},
    400: {"description": "not JSON, or not what this endpoint takes"}, 401: {"description": "no valid token"},
    403: {"description": "the role may not submit"}, 413: {"description": "body over the limit"},
    415: {"description": "wrong content type"},
    422: {"description": "rejected: every problem listed; or an Idempotency-Key sent before with another body"},
    503: {"description": "the broker or the database is not available (Retry-After)"},
}
_STATUS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "answered: the body the submitting request would have got; its status in the "
                         "Rapport-Answer-Status header"},
    202: {"description": "published, not answered yet (Retry-After)"}, 401: {"description": "no valid token"},
    403: {"description": "the role may not read submissions (only integration may)"},
    404: {"description": "this tenant sent no message with this id through the gateway"},
    503: {"description": "the database is not available (Retry-After)"},
}


def create_app(intake: Intake, gate: Gate, *, version: str, wait_seconds: float,
               clock: Callable[[], datetime] = lambda: datetime.now(UTC),
               routers: Sequence[APIRouter] = (), audit: Audit | None = None) -> FastAPI:
    """The submission routes here; every other area (records, notifications, sign-in, pages) is a
    router of its own module, included as given. With `audit`, every submitting request's answer is
    in the audit trail."""
    submitting = Submitting(audit)
    app = FastAPI(title="Rapport gateway", version=version, openapi_url="/api/v1/openapi.json",
                  docs_url=None, redoc_url=None,
                  description="FHIR R4 REST at /fhir (CapabilityStatement at /fhir/metadata) and the native "
                              "JSON twin at /api/v1. Bearer JWTs; the tenant is the token's.")

    @app.exception_handler(Refused)
    async def refused(request: Request, error: Refused) -> Response:
        return refusal_response(request.url.path, error)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        """A query parameter or JSON body the route's model refuses: every problem, by field, without
        repeating the value sent."""
        problems = [Problem(field=".".join(str(p) for p in e.get("loc", ()) if p != "body"),
                            code=str(e.get("type", "invalid")), message=str(e.get("msg", "invalid"))).model_dump()
                    for e in error.errors()]
        return _native(422, {"status": "refused", "problems": problems})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "invalid")
        words = {404: "no such endpoint", 405: "method not allowed here"}.get(error.status_code, "refused")
        return refusal_response(request.url.path, Refused(error.status_code, code, words))

    app.add_middleware(Measured)

    @app.get("/fhir/metadata", tags=["fhir"], summary="CapabilityStatement (no token needed)")
    async def metadata() -> Response:
        limit = gate.body_limit()
        return _fhir(200, fhir.capability_statement(now=clock(), version=version, max_body_bytes=limit,
                                                    wait_seconds=wait_seconds))

    async def resource(request: Request, resource_type: str) -> Response:
        async def work() -> Submitted:
            principal = await gate.principal(request, "submit")
            body, document = await gate.body(request, FHIR_TYPES)
            found = document.get("resourceType")
            if found != resource_type:
                where = "POST a Bundle to /fhir" if found == "Bundle" else f"POST a {found} to /fhir/{found}"
                raise Refused(400, "wrong_resource_type",
                              f"this endpoint takes a {resource_type}" + (f"; {where}" if found in (
                                  "Bundle", *fhir.SUBMISSION_TYPES, *fhir.ATTENDANCE_TYPES) else ""),
                              field="resourceType")
            received = await _submit(intake, principal, body, request, resource_type)
            return Submitted(principal, received, fhir_answer(received, resource_type, wait_seconds), SUBMIT)
        return await submitting(request, SUBMIT, work)

    @app.post("/fhir/QuestionnaireResponse", tags=["fhir"], status_code=201, responses=_RESPONSES,
              openapi_extra={"requestBody": _BODY_DOC, "parameters": _HEADERS_DOC},
              summary="Create a QuestionnaireResponse (one administration of one instrument)")
    async def questionnaire_response(request: Request) -> Response:
        return await resource(request, "QuestionnaireResponse")

    @app.post("/fhir/Observation", tags=["fhir"], status_code=201, responses=_RESPONSES,
              openapi_extra={"requestBody": _BODY_DOC, "parameters": _HEADERS_DOC},
              summary="Create an Observation (an instrument's LOINC total score)")
    async def observation(request: Request) -> Response:
        return await resource(request, "Observation")

    @app.post("/fhir", tags=["fhir"], responses={200: {"description": "batch-response"}, **_RESPONSES},
              openapi_extra={"requestBody": _BODY_DOC, "parameters": _HEADERS_DOC},
              summary="A Bundle of type batch or collection (transaction: refused, send a batch)")
    async def bundle(request: Request) -> Response:
        return await submitting(request, SUBMIT, lambda: bundle_work(request))

    async def bundle_work(request: Request) -> Submitted:
        principal = await gate.principal(request, "submit")
        body, document = await gate.body(request, FHIR_TYPES)
        if document.get("resourceType") != "Bundle":
            raise Refused(400, "wrong_resource_type", "POST [base] takes a Bundle; POST a resource to "
                          "/fhir/QuestionnaireResponse or /fhir/Observation", field="resourceType")
        return await batch_work(request, principal, body, document)

    @app.post("/fhir/subscription-hook/{subscription_id}", tags=["fhir"],
              responses={200: {"description": "batch-response, or an OperationOutcome for a notification that "
                                              "carries nothing"}, **_RESPONSES},
              summary="A FHIR Subscription rest-hook notification (Subscriptions R5 Backport IG, full-resource)")
    async def subscription_hook(request: Request, subscription_id: str) -> Response:
        return await submitting(request, SUBMIT, lambda: hook_work(request, subscription_id))

    async def hook_work(request: Request, subscription_id: str) -> Submitted:
        principal = await gate.principal(request, "submit")
        _body, document = await gate.body(request, FHIR_TYPES)
        try:
            notification = read_notification(document, subscription_id)
        except NotificationRefused as refused:
            raise Refused(422, refused.code, f"{refused.message} (at Bundle.{refused.field})",
                          field=refused.field) from None
        if not notification.entries:
            said = fhir.operation_outcome([fhir.issue("information", "informational",
                                                      f"{notification.kind} received: nothing to store")])
            return Submitted(principal, Received("", []), _fhir(200, said), SUBMIT,
                             parts=[(f"subscription/{subscription_id}", notification.kind)])
        batch = {"resourceType": "Bundle", "type": "batch", "entry": notification.entries}
        return await batch_work(request, principal, json.dumps(batch, separators=(",", ":")).encode(), batch)

    async def batch_work(request: Request, principal: Principal, body: bytes, document: dict[str, Any]) -> Submitted:
        kind = document.get("type")
        if kind == "transaction":
            raise Refused(422, "transaction_not_supported",
                          "transaction Bundles are not supported: send the same entries as a batch (type batch); "
                          "each entry is then accepted or rejected on its own", field="type")
        if kind not in fhir.SUPPORTED_BUNDLE_TYPES:
            raise Refused(422, "unsupported_bundle_type", "Bundle type must be batch or collection", field="type")
        channel = fhir.bundle_channel(document)
        if channel is None:
            raise Refused(422, "mixed_bundle", "a Bundle is either submissions (QuestionnaireResponse, Observation) "
                          "or attendance (Appointment, Encounter, EpisodeOfCare): send the Appointments in a "
                          "Bundle of their own", field="entry")
        attendance = channel == "attendance"
        received = await _submit(intake, principal, body, request, "Bundle",
                                 channel=ATTENDANCE if attendance else SUBMISSIONS)
        return Submitted(principal, received, fhir_answer(received, "Bundle", wait_seconds),
                         RECORD_ATTENDANCE if attendance else SUBMIT)

    @app.post("/api/v1/submissions", tags=["native"], status_code=201, responses=_RESPONSES,
              openapi_extra={"requestBody": _NATIVE_DOC, "parameters": _HEADERS_DOC},
              summary="A native JSON submission (the format in the README)")
    async def native(request: Request) -> Response:
        async def work() -> Submitted:
            principal = await gate.principal(request, "submit")
            body, document = await gate.body(request, NATIVE_TYPES)
            if "resourceType" in document:
                raise Refused(400, "wrong_format", "a FHIR resource: POST it under /fhir", field="resourceType")
            received = await _submit(intake, principal, body, request, "native")
            return Submitted(principal, received, native_answer(received, wait_seconds), SUBMIT)
        return await submitting(request, SUBMIT, work)

    async def message_status(request: Request, message_id: str) -> tuple[Received, str]:
        """What the gateway knows of a message this tenant sent through it; 404 for any other id
        (another tenant's included: its key is the tenant's, so it is simply not found)."""
        principal = await gate.principal(request, "read_submissions")
        if not message_id.startswith(GATEWAY_MESSAGE_PREFIX) or len(message_id) > 64:
            raise Refused(404, "not_found", "no message with this id was sent through the gateway")
        try:
            status = await intake.stored.status(principal.tenant, message_id)
        except Exception as error:  # the database away
            log.warning("a message's status could not be read (%s)", type(error).__name__)
            raise Refused(503, "store_unavailable", "the answers cannot be read now; try again later",
                          headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
        if status.answers is None and status.form is None:
            raise Refused(404, "not_found", "no message with this id was sent through the gateway")
        return Received(message_id, status.answers), status.form or "native"

    @app.get("/api/v1/messages/{message_id}", tags=["native"], responses=_STATUS_RESPONSES,
             summary="A submitted message's answer, or 202 while ingest has not answered (the 202's Location)")
    async def native_message(request: Request, message_id: str) -> Response:
        received, _form = await message_status(request, message_id)
        return _native(*polled(native_body(received, None)))

    @app.get("/fhir/_messages/{message_id}", tags=["fhir"], responses=_STATUS_RESPONSES,
             summary="A submitted message's OperationOutcome or batch-response, or 202 while pending")
    async def fhir_message(request: Request, message_id: str) -> Response:
        received, form = await message_status(request, message_id)
        return _fhir(*polled(fhir_body(received, form, None)))

    for router in routers:
        app.include_router(router)
    return app
