"""Where notifications go, under /api/v1:

    POST   /webhooks                    a webhook endpoint; the answer carries its secret, once
    GET    /webhooks                    the caller's endpoints
    GET    /webhooks/{id}
    DELETE /webhooks/{id}               with its deliveries (none is sent after)
    POST   /webhooks/{id}/rotate-secret a new secret, shown once; the replaced one signs too for a day
    GET    /webhooks/{id}/attempts      every delivery attempt: when, status code or kind of failure,
                                        attempt number, what it came to, when the next is due
    POST   /webhooks/{id}/deliveries/{webhook-id}/retry
                                        one more try of a dead, refused or delivered notification
    ... and the same six under /email-subscriptions (an address instead of a URL, no secret).

An admin (`manage_webhooks`) manages every target of the tenant: for one clinician, or with no
clinician for every notification of the tenant (a team's channel). A clinician
(`manage_own_webhooks`) manages the targets for their own clinician id only. Another tenant's or
another clinician's target is answered 404, like one that does not exist; other roles 403.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Protocol, TypeVar
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.gateway.http import NATIVE_TYPES, Gate, Refused
from rapport.services.gateway.notifications.domain import (
    EMAIL_ADDRESS,
    SECRET_ROTATION_GRACE,
    Channel,
    Scope,
    fingerprint,
    new_secret,
    still_signing,
)
from rapport.services.gateway.notifications.egress import EgressPolicy, check_url
from rapport.services.gateway.notifications.models import EmailSubscription, WebhookEndpoint
from rapport.services.gateway.notifications.repository import (
    AttemptSeen,
    add_target,
    attempts_for,
    remove_target,
    rotate_secret,
    target_in_scope,
    targets_in_scope,
    try_again,
)
from rapport.services.gateway.tokens import Principal
from rapport.shared.contracts.problems import Problem
from rapport.shared.contracts.tenancy import SubjectToken

Authenticate = Callable[[Request, str], Awaitable[Principal]]


class Audit(Protocol):
    """The audit trail's face (services/gateway/audit.py, `AuditTrail`): one row per command and per
    read of the attempts (they name alerts), in the transaction of the work where there is one."""

    async def record(self, *, action: str, outcome: int, principal: Principal | None = None,
                     resource: str | None = None, request: Request | None = None, credential: str | None = None,
                     detail: str | None = None, session: AsyncSession | None = None) -> None: ...


M = TypeVar("M", bound=BaseModel)
MAX_ATTEMPTS_SHOWN = 1000


class NewWebhook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, description="https:// to a public address (plain http and loopback, private "
                                                   "or link-local addresses only where the operator allows them: "
                                                   "RAPPORT_WEBHOOK_ALLOW_HOSTS, RAPPORT_WEBHOOK_ALLOW_HTTP); "
                                                   "redirects are not followed")
    clinician_id: SubjectToken | None = Field(default=None, description="whose notifications; an admin may leave "
                                              "it out for every notification of the tenant, a clinician's is theirs")
    description: str = Field(default="", max_length=200)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("an absolute http:// or https:// URL")
        return value


class NewEmailSubscription(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str = Field(max_length=320, description="where the e-mails go")
    clinician_id: SubjectToken | None = Field(default=None, description="as for a webhook endpoint")

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not EMAIL_ADDRESS.fullmatch(value):
            raise ValueError("an e-mail address (local@domain)")
        return value


class WebhookShown(BaseModel):
    id: str
    url: str
    clinician_id: str | None
    description: str
    created_at: datetime
    created_by: str
    secret_fingerprint: str = Field(description="tells secrets apart; the secret itself is shown only on creation "
                                                "and rotation")
    previous_secret_fingerprint: str | None = Field(
        default=None, description="after a rotation, the replaced secret's, while tries are signed with it too")
    previous_secret_until: datetime | None = Field(
        default=None, description="until when tries carry the replaced secret's signature beside the new one's")


class WebhookCreated(WebhookShown):
    secret: str = Field(description="whsec_ + base64: verify webhook-signature with it. Shown this once")


class SecretRotated(WebhookShown):
    secret: str = Field(description="the new whsec_ secret, shown this once: tries are signed with it from now on, "
                                    "and with the replaced one too until previous_secret_until")


class EmailSubscriptionShown(BaseModel):
    id: str
    address: str
    clinician_id: str | None
    created_at: datetime
    created_by: str


class Webhooks(BaseModel):
    webhooks: list[WebhookShown]


class EmailSubscriptions(BaseModel):
    email_subscriptions: list[EmailSubscriptionShown]


class AttemptShown(BaseModel):
    webhook_id: str = Field(description="the delivery's id: the webhook-id header, the same on every retry")
    event_id: str
    alert_id: str
    attempt: int
    attempted_at: datetime
    duration_ms: int
    status_code: int | None = Field(description="the receiver's HTTP status (SMTP reply code for e-mail)")
    error: str | None = Field(description="no answer: timeout, connection, invalid_url, not_configured, "
                                           "address_refused (the SSRF guard), secret_unreadable (sealed with "
                                           "another key)")
    outcome: str = Field(description="delivered, retried, rejected (not tried again) or dead (the last try failed)")
    next_attempt_at: datetime | None
    delivery_status: str = Field(description="the delivery now: pending, delivered, rejected or dead")


class Retried(BaseModel):
    webhook_id: str
    was: str = Field(description="the delivery's status before: delivered, rejected or dead (pending: left as it was)")
    delivery_status: str = Field(description="pending: the sender tries it within RAPPORT_NOTIFY_POLL_SECONDS")


class Attempts(BaseModel):
    target_id: str
    attempts: list[AttemptShown]


def _webhook(row: WebhookEndpoint, now: datetime) -> WebhookShown:
    previous = still_signing(row.previous_secret or None, row.previous_secret_until, now)
    return WebhookShown(id=row.id, url=row.url, clinician_id=row.clinician_id, description=row.description,
                        created_at=row.created_at, created_by=row.created_by,
                        # "" (sealing.UNREADABLE): sealed with a key this gateway does not hold
                        secret_fingerprint=fingerprint(row.secret) if row.secret else "unreadable",
                        previous_secret_fingerprint=fingerprint(previous) if previous else None,
                        previous_secret_until=row.previous_secret_until if previous else None)


def _subscription(row: EmailSubscription) -> EmailSubscriptionShown:
    return EmailSubscriptionShown(id=row.id, address=row.address, clinician_id=row.clinician_id,
                                  created_at=row.created_at, created_by=row.created_by)


def _attempt(seen: AttemptSeen) -> AttemptShown:
    return AttemptShown(**seen.__dict__)


RESOURCE: dict[Channel, str] = {"webhook": "webhook", "email": "email-subscription"}


def _not_found(channel: Channel) -> Refused:
    return Refused(404, "not_found", "no such webhook endpoint" if channel == "webhook"
                   else "no such e-mail subscription")


def _request_body(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def notifications_router(gate: Gate, sessions: async_sessionmaker[AsyncSession], *,
                         clock: Callable[[], datetime], email_configured: bool,
                         egress: EgressPolicy | None = None,
                         authenticate: Authenticate | None = None, audit: Audit | None = None) -> APIRouter:
    """`authenticate` (default: the bearer token, `gate.principal`) is asked for `manage_webhooks`
    first and, refused with 403, for `manage_own_webhooks`: the two roles' actions. `egress` says
    where a webhook may go (default: public addresses over https only)."""
    egress = egress or EgressPolicy()
    who = authenticate or gate.principal
    # the bearer token when it is the gate's; another authenticate says on the request (sign-in)
    credential = "bearer" if authenticate is None else None
    router = APIRouter(prefix="/api/v1", tags=["notifications"])
    not_found: dict[int | str, dict[str, Any]] = {404: {"description": "no such target for this caller"},
                                                  403: {"description": "the role may not manage notifications"}}

    async def scope_of(request: Request) -> tuple[Principal, Scope]:
        """An admin's scope is the tenant, a clinician's their own targets; any other role 403."""
        try:
            principal = await who(request, "manage_webhooks")
            return principal, Scope(principal.tenant, None)
        except Refused as refused:
            if refused.status != 403:
                raise
        principal = await who(request, "manage_own_webhooks")
        if principal.clinician is None:
            raise Refused(403, "forbidden", "a clinician's token must name their clinician id")
        return principal, Scope(principal.tenant, principal.clinician)

    def for_whom(scope: Scope, asked: str | None) -> str | None:
        if scope.clinician is None or asked in (None, scope.clinician):
            return asked if scope.clinician is None else scope.clinician
        raise Refused(403, "forbidden", "a clinician sets up notifications for their own clinician id only",
                      field="clinician_id")

    async def parsed(request: Request, model: type[M]) -> M | Response:
        """The body as the model, or the 422 answer listing every problem (by field, never the value)."""
        _body, document = await gate.body(request, NATIVE_TYPES)
        try:
            return model.model_validate(document)
        except ValidationError as error:
            problems = [Problem(field=".".join(str(p) for p in e["loc"]), code=e["type"], message=e["msg"]).model_dump()
                        for e in error.errors(include_input=False, include_url=False)]
            return JSONResponse({"status": "refused", "problems": problems}, 422)

    async def found(scope: Scope, channel: Channel, target_id: str) -> Any:
        async with sessions() as session:
            row = await target_in_scope(session, channel, scope, target_id)
        if row is None:
            raise _not_found(channel)
        return row

    async def audited(request: Request, principal: Principal, scope: Scope, what: str, resource: str,
                      outcome: int, session: AsyncSession | None = None) -> None:
        if audit is not None:
            await audit.record(action="manage_webhooks" if scope.clinician is None else "manage_own_webhooks",
                               outcome=outcome, principal=principal, resource=resource, request=request,
                               credential=credential, detail=what, session=session)

    async def attempts(request: Request, channel: Channel, target_id: str, limit: int) -> Attempts:
        principal, scope = await scope_of(request)
        resource = f"{RESOURCE[channel]}/{target_id}"
        async with sessions() as session, session.begin():
            mine = await target_in_scope(session, channel, scope, target_id) is not None
            seen = await attempts_for(session, target_id, limit) if mine else []
            await audited(request, principal, scope, "read_attempts", resource, 200 if mine else 404, session)
        if not mine:
            raise _not_found(channel)
        return Attempts(target_id=target_id, attempts=[_attempt(s) for s in seen])

    async def retried(request: Request, channel: Channel, target_id: str, delivery_id: str) -> Retried:
        principal, scope = await scope_of(request)
        resource = f"{RESOURCE[channel]}/{target_id}/delivery/{delivery_id}"
        async with sessions() as session, session.begin():
            mine = await target_in_scope(session, channel, scope, target_id) is not None
            before = await try_again(session, target_id, delivery_id, clock()) if mine else None
            await audited(request, principal, scope, "retry", resource, 404 if before is None else 202, session)
        if before is None:
            raise _not_found(channel) if not mine else Refused(404, "not_found", "no such delivery to this target")
        return Retried(webhook_id=delivery_id, was=before, delivery_status="pending")

    async def removed(request: Request, channel: Channel, target_id: str) -> Response:
        principal, scope = await scope_of(request)
        async with sessions() as session, session.begin():
            gone = await remove_target(session, channel, scope, target_id)
            await audited(request, principal, scope, "delete", f"{RESOURCE[channel]}/{target_id}",
                          204 if gone else 404, session)
        if not gone:
            raise _not_found(channel)
        return Response(status_code=204)

    # webhooks

    @router.post("/webhooks", status_code=201, response_model=WebhookCreated, responses=not_found,
                 openapi_extra=_request_body(NewWebhook), summary="A webhook endpoint (its secret is shown once)")
    async def create_webhook(request: Request) -> WebhookCreated | Response:
        principal, scope = await scope_of(request)
        asked = await parsed(request, NewWebhook)
        if isinstance(asked, Response):
            return asked
        clinician = for_whom(scope, asked.clinician_id)
        refused = await check_url(egress, asked.url)
        if refused is not None:  # the SSRF guard (egress.py); every try checks again
            problem = Problem(field="url", code="address_refused", message=refused)
            return JSONResponse({"status": "refused", "problems": [problem.model_dump()]}, 422)
        row = WebhookEndpoint(id=str(uuid.uuid4()), tenant=scope.tenant, clinician_id=clinician, url=asked.url,
                              description=asked.description, secret=new_secret(), created_at=clock(),
                              created_by=principal.subject[:255])
        async with sessions() as session, session.begin():
            await add_target(session, row)
            await audited(request, principal, scope, "create", f"webhook/{row.id}", 201, session)
        return WebhookCreated(**_webhook(row, clock()).model_dump(), secret=row.secret)

    @router.get("/webhooks", response_model=Webhooks, responses=not_found, summary="The caller's webhook endpoints")
    async def list_webhooks(request: Request) -> Webhooks:
        _principal, scope = await scope_of(request)
        async with sessions() as session:
            rows = await targets_in_scope(session, "webhook", scope)
        now = clock()
        return Webhooks(webhooks=[_webhook(r, now) for r in rows if isinstance(r, WebhookEndpoint)])

    @router.get("/webhooks/{target_id}", response_model=WebhookShown, responses=not_found,
                summary="One webhook endpoint (without its secret)")
    async def get_webhook(request: Request, target_id: str) -> WebhookShown:
        _principal, scope = await scope_of(request)
        return _webhook(await found(scope, "webhook", target_id), clock())

    @router.delete("/webhooks/{target_id}", status_code=204, responses=not_found,
                   summary="Delete a webhook endpoint and its deliveries")
    async def delete_webhook(request: Request, target_id: str) -> Response:
        return await removed(request, "webhook", target_id)

    @router.post("/webhooks/{target_id}/rotate-secret", response_model=SecretRotated, responses=not_found,
                 summary="A new secret for the endpoint (shown once); the replaced one signs too for 24 hours")
    async def rotate_webhook_secret(request: Request, target_id: str) -> SecretRotated:
        principal, scope = await scope_of(request)
        now = clock()
        async with sessions() as session, session.begin():
            row = await rotate_secret(session, scope, target_id, new_secret(), now, SECRET_ROTATION_GRACE)
            await audited(request, principal, scope, "rotate_secret", f"webhook/{target_id}",
                          404 if row is None else 200, session)
            if row is not None:
                rotated = SecretRotated(**_webhook(row, now).model_dump(), secret=row.secret)
        if row is None:
            raise _not_found("webhook")
        return rotated

    @router.get("/webhooks/{target_id}/attempts", response_model=Attempts, responses=not_found,
                summary="Every delivery attempt to the endpoint, newest first")
    async def webhook_attempts(request: Request, target_id: str,
                               limit: Annotated[int, Query(ge=1, le=MAX_ATTEMPTS_SHOWN)] = 100) -> Attempts:
        return await attempts(request, "webhook", target_id, limit)

    @router.post("/webhooks/{target_id}/deliveries/{delivery_id}/retry", status_code=202, response_model=Retried,
                 responses=not_found, summary="Try a delivery once more (a dead, refused or delivered one)")
    async def retry_webhook(request: Request, target_id: str, delivery_id: str) -> Retried:
        return await retried(request, "webhook", target_id, delivery_id)

    # e-mail

    @router.post("/email-subscriptions", status_code=201, response_model=EmailSubscriptionShown, responses={
        **not_found, 409: {"description": "e-mail delivery is not configured (RAPPORT_SMTP_URL)"}},
        openapi_extra=_request_body(NewEmailSubscription), summary="An address notifications are e-mailed to")
    async def create_subscription(request: Request) -> EmailSubscriptionShown | Response:
        principal, scope = await scope_of(request)
        asked = await parsed(request, NewEmailSubscription)
        if isinstance(asked, Response):
            return asked
        clinician = for_whom(scope, asked.clinician_id)
        if not email_configured:
            raise Refused(409, "email_not_configured", "e-mail delivery is not configured on this gateway "
                          "(RAPPORT_SMTP_URL)")
        row = EmailSubscription(id=str(uuid.uuid4()), tenant=scope.tenant, clinician_id=clinician,
                                address=asked.address, created_at=clock(), created_by=principal.subject[:255])
        async with sessions() as session, session.begin():
            await add_target(session, row)
            await audited(request, principal, scope, "create", f"email-subscription/{row.id}", 201, session)
        return _subscription(row)

    @router.get("/email-subscriptions", response_model=EmailSubscriptions, responses=not_found,
                summary="The caller's e-mail subscriptions")
    async def list_subscriptions(request: Request) -> EmailSubscriptions:
        _principal, scope = await scope_of(request)
        async with sessions() as session:
            rows = await targets_in_scope(session, "email", scope)
        return EmailSubscriptions(email_subscriptions=[_subscription(r) for r in rows
                                                       if isinstance(r, EmailSubscription)])

    @router.get("/email-subscriptions/{target_id}", response_model=EmailSubscriptionShown, responses=not_found,
                summary="One e-mail subscription")
    async def get_subscription(request: Request, target_id: str) -> EmailSubscriptionShown:
        _principal, scope = await scope_of(request)
        return _subscription(await found(scope, "email", target_id))

    @router.delete("/email-subscriptions/{target_id}", status_code=204, responses=not_found,
                   summary="Delete an e-mail subscription and its deliveries")
    async def delete_subscription(request: Request, target_id: str) -> Response:
        return await removed(request, "email", target_id)

    @router.get("/email-subscriptions/{target_id}/attempts", response_model=Attempts, responses=not_found,
                summary="Every delivery attempt to the address, newest first")
    async def subscription_attempts(request: Request, target_id: str,
                                    limit: Annotated[int, Query(ge=1, le=MAX_ATTEMPTS_SHOWN)] = 100) -> Attempts:
        return await attempts(request, "email", target_id, limit)

    @router.post("/email-subscriptions/{target_id}/deliveries/{delivery_id}/retry", status_code=202,
                 response_model=Retried, responses=not_found, summary="Try an e-mail delivery once more")
    async def retry_email(request: Request, target_id: str, delivery_id: str) -> Retried:
        return await retried(request, "email", target_id, delivery_id)

    return router
