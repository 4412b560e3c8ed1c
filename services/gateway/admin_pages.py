"""The admin's pages (issue 12 item 4), role admin:

    GET /admin               what an admin can look at: the pages below and the audit trail (/audit);
                             also an admin's start page, `/`
    GET /admin/webhooks      the tenant's webhook endpoints and e-mail subscriptions, each with its
                             latest delivery attempts (`manage_webhooks`)
    POST /admin/webhooks/{channel}/{id}/deliveries/{webhook-id}/retry
                             one more try of a dead or refused delivery (channel `webhook` or `email`)
    POST /admin/webhooks/{channel}/{id}/delete
                             the endpoint or subscription, with its deliveries
    GET /admin/sessions      the tenant's live dashboard sessions: who, role, since when, until when,
                             how they signed in (`manage_sessions`, audited `read_sessions`)
    POST /admin/sessions/{handle}/end
                             ends one of them at once (audited `end_session`); another tenant's is 404
    GET /admin/instruments   the instrument registry as this tenant may use it: free and public-domain
                             measures, and the licensed ones `RAPPORT_LICENSED_INSTRUMENTS` lists for
                             the tenant (`read_instruments`)

The targets and attempts are read through the notifications package's repository (the functions
its API uses, `targets_in_scope` and `attempts_for`), in the admin's scope: the whole tenant. Secrets
are never shown, only their fingerprints. Reading a target's attempts is audited as the API audits
it (`manage_webhooks`, `read_attempts`, the target's id); reading the instruments as
`read_instruments`.

Retry and Delete are buttons: forms that POST with the session's CSRF token (refused 403 without
it, by `SignIn.principal_of`), carried out by the same repository functions the API's
`POST …/deliveries/{id}/retry` and `DELETE …/{id}` call (`target_in_scope` then `try_again`;
`remove_target`) and audited as the API audits them (`manage_webhooks`, detail `retry` or `delete`,
the outcome the API answers: 202, 204, or 404 for another tenant's or no such target), in the
transaction of the change. Without scripts the answer is a 303 back to the page; with htmx the
target's section is swapped in place and says what happened. Creating a target stays with the API
(its secret is shown once, which a page would have to keep on screen).

Sessions are named on the page by their `handle` (signin.py), never by the session id or its hash.
The last time a session was used is not stored (it would be a write on every request), so the page
shows when it started and when it expires.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.gateway.audit import AuditTrail
from rapport.services.gateway.http import Refused
from rapport.services.gateway.notifications.domain import Channel, Scope, fingerprint
from rapport.services.gateway.notifications.models import EmailSubscription, WebhookEndpoint
from rapport.services.gateway.notifications.repository import (
    AttemptSeen,
    attempts_for,
    remove_target,
    target_in_scope,
    targets_in_scope,
    try_again,
)
from rapport.services.gateway.pages import page_principal
from rapport.services.gateway.signin import SignIn
from rapport.services.gateway.tokens import Principal
from rapport.services.gateway.views import Views
from rapport.shared.instruments import Registry, load_registry
from rapport.shared.settings import Settings

ATTEMPTS_SHOWN = 20
HANDLE = re.compile(r"[A-Za-z0-9_-]{1,32}")
# the deliveries a Retry button is offered for: done and not delivered (the API also retries a delivered one)
RETRYABLE = ("dead", "rejected")
LICENCE_WORDS = {"public_domain": "public domain", "free": "free to use", "licensed": "licensed"}


@dataclass(frozen=True)
class TargetShown:
    channel: Channel
    id: str
    where: str  # the URL or the address
    clinician_id: str | None
    description: str
    created_at: Any
    created_by: str
    secret_fingerprint: str | None
    attempts: list[AttemptSeen]

    @property
    def retry_on(self) -> frozenset[tuple[str, int]]:
        """The (delivery, attempt) rows that carry a Retry button: each dead or refused delivery's
        newest attempt shown."""
        newest: dict[str, int] = {}
        for a in self.attempts:  # newest first
            if a.delivery_status in RETRYABLE:
                newest.setdefault(a.webhook_id, a.attempt)
        return frozenset(newest.items())


@dataclass(frozen=True)
class InstrumentShown:
    id: str
    title: str
    kind: str
    licence: str
    holder: str | None
    usable: bool
    why: str


def instruments_for(registry: Registry, licensed: frozenset[str]) -> tuple[list[InstrumentShown], list[str]]:
    """Every registry instrument with whether this tenant may submit it (as ingest decides: a
    licensed measure only when the tenant's licence is listed), and the listed ids the registry does
    not know (a typo in the setting, worth seeing)."""
    shown = []
    for ins in registry:
        status = ins.licence.status
        if status != "licensed":
            usable, why = True, LICENCE_WORDS[status]
        elif ins.id in licensed:
            usable, why = True, "licensed to this tenant (RAPPORT_LICENSED_INSTRUMENTS)"
        else:
            usable, why = False, "needs a licence: not listed for this tenant in RAPPORT_LICENSED_INSTRUMENTS"
        shown.append(InstrumentShown(ins.id, ins.title, ins.kind, LICENCE_WORDS[status], ins.licence.holder,
                                     usable, why))
    known = {ins.id for ins in registry}
    return shown, sorted(licensed - known)


async def _shown(session: AsyncSession, row: Any) -> TargetShown | None:
    attempts = await attempts_for(session, row.id, ATTEMPTS_SHOWN)
    if isinstance(row, WebhookEndpoint):
        return TargetShown("webhook", row.id, row.url, row.clinician_id, row.description,
                           row.created_at, row.created_by, fingerprint(row.secret), attempts)
    if isinstance(row, EmailSubscription):
        return TargetShown("email", row.id, row.address, row.clinician_id, "", row.created_at,
                           row.created_by, None, attempts)
    return None


async def targets_with_attempts(session: AsyncSession, tenant: str) -> list[TargetShown]:
    scope = Scope(tenant, None)
    found: list[TargetShown] = []
    for channel in ("webhook", "email"):
        for row in await targets_in_scope(session, channel, scope):
            shown = await _shown(session, row)
            if shown is not None:
                found.append(shown)
    return found


Command = Literal["retry", "delete"]
CHANNELS: dict[str, Channel] = {"webhook": "webhook", "email": "email"}
SAID = {"dead": "Sent again: the delivery is pending and will be tried shortly.",
        "rejected": "Sent again: the delivery is pending and will be tried shortly.",
        "delivered": "Sent again: the delivery is pending and will be tried shortly.",
        "pending": "Nothing changed: the delivery is already waiting for its next try."}


RESOURCE: dict[str, str] = {"webhook": "webhook", "email": "email-subscription"}


async def admin_start_page(views: Views, request: Request, principal: Principal) -> Response:
    """At `/admin`, and at `/` for an admin (pages.py's start page for the role)."""
    return views.render(request, "admin.html")


def admin_router(sessions: async_sessionmaker[AsyncSession], sign_in: SignIn, audit: AuditTrail, views: Views,
                 settings: Settings, *, registry: Registry | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    instruments = registry or load_registry()

    async def command(request: Request, channel_name: str, target_id: str, what: Command,
                      delivery_id: str | None = None) -> Response:
        """Retry or delete, as the API does it (see the module's words), answered as a page."""
        principal = await page_principal(sign_in, request, "manage_webhooks")  # the CSRF check, 401, 403
        if isinstance(principal, Response):
            return principal
        channel = CHANNELS.get(channel_name)
        if channel is None:
            return views.message(request, 404, "No such target", "There is no such webhook endpoint or e-mail "
                                                                  "subscription for this tenant.")
        scope, resource = Scope(principal.tenant, None), f"{RESOURCE[channel]}/{target_id}"
        shown: TargetShown | None = None
        before: str | None = None
        async with sessions() as session, session.begin():
            if what == "delete":
                done = await remove_target(session, channel, scope, target_id)
                outcome = 204 if done else 404
            else:
                resource += f"/delivery/{delivery_id}"
                row = await target_in_scope(session, channel, scope, target_id)
                before = await try_again(session, target_id, str(delivery_id), clock()) if row is not None else None
                outcome = 404 if before is None else 202
                if row is not None:
                    shown = await _shown(session, row)
            await audit.record(action="manage_webhooks", outcome=outcome, principal=principal, request=request,
                               resource=resource, detail=what, session=session)
        if outcome == 404:
            return views.message(request, 404, "No such target" if shown is None else "No such delivery",
                                 "There is no such webhook endpoint or e-mail subscription for this tenant."
                                 if shown is None else "This target has no delivery with that id.")
        if request.headers.get("hx-request") != "true":
            return RedirectResponse("/admin/webhooks", status_code=303)
        if what == "delete":
            return views.render(request, "admin_target_gone.html", target_id=target_id,
                                said="Deleted, with its deliveries: nothing more is sent there.")
        return views.render(request, "admin_target.html", 202, t=shown, said=SAID.get(before or ""))

    @router.post("/admin/webhooks/{channel}/{target_id}/deliveries/{delivery_id}/retry")
    async def retry(request: Request, channel: str, target_id: str, delivery_id: str) -> Response:
        return await command(request, channel, target_id, "retry", delivery_id)

    @router.post("/admin/webhooks/{channel}/{target_id}/delete")
    async def delete(request: Request, channel: str, target_id: str) -> Response:
        return await command(request, channel, target_id, "delete")

    @router.get("/admin")
    async def admin_start(request: Request) -> Response:
        principal = await page_principal(sign_in, request, "read_audit")
        if isinstance(principal, Response):
            return principal
        return await admin_start_page(views, request, principal)

    @router.get("/admin/webhooks")
    async def webhooks_page(request: Request) -> Response:
        principal = await page_principal(sign_in, request, "manage_webhooks")
        if isinstance(principal, Response):
            return principal
        async with sessions() as session, session.begin():
            targets = await targets_with_attempts(session, principal.tenant)
            for target in targets:
                await audit.record(action="manage_webhooks", outcome=200, principal=principal, request=request,
                                   resource=f"{RESOURCE[target.channel]}/{target.id}", detail="read_attempts",
                                   session=session)
        return views.render(request, "admin_webhooks.html", targets=targets, shown_attempts=ATTEMPTS_SHOWN)

    @router.get("/admin/sessions")
    async def sessions_page(request: Request) -> Response:
        principal = await page_principal(sign_in, request, "manage_sessions")
        if isinstance(principal, Response):
            return principal
        live = await sign_in.live_sessions(principal.tenant)
        await audit.record(action="read_sessions", outcome=200, principal=principal, request=request,
                           resource="sessions")
        mine = getattr(await sign_in.signed_in(request), "handle", None)
        return views.render(request, "admin_sessions.html", live=live, mine=mine)

    @router.post("/admin/sessions/{handle}/end")
    async def end_session(request: Request, handle: str) -> Response:
        await sign_in.signed_in(request)
        try:
            principal = await sign_in.principal_of(request, "manage_sessions", audited_as="end_session")
        except Refused as refused:
            return views.message(request, refused.status, "Not for your role" if refused.status == 403
                                 else "Sign in", refused.message)
        ended = await sign_in.end_session(request, principal, handle) if HANDLE.fullmatch(handle) else None
        if ended is None:
            if not HANDLE.fullmatch(handle):
                await audit.record(action="end_session", outcome=404, principal=principal, request=request,
                                   resource="session", detail="not_a_handle")
            return views.message(request, 404, "No such session",
                                 "There is no live session with this name for your tenant (it may have ended).")
        if request.headers.get("hx-request") != "true":
            return RedirectResponse("/admin/sessions", status_code=303)
        return views.render(request, "admin_session_gone.html", handle=ended.handle,
                            said=f"Ended: {ended.subject} ({ended.role}) is signed out.")

    @router.get("/admin/instruments")
    async def instruments_page(request: Request) -> Response:
        principal = await page_principal(sign_in, request, "read_instruments")
        if isinstance(principal, Response):
            return principal
        shown, unknown = instruments_for(instruments, settings.licensed_for(principal.tenant))
        await audit.record(action="read_instruments", outcome=200, principal=principal, request=request,
                           resource="instruments")
        return views.render(request, "admin_instruments.html", instruments=shown, unknown=unknown)

    return router
