"""The admin's pages (issue 12 item 4), role admin:

    GET /admin               what an admin can look at: the pages below and the audit trail (/audit);
                             also an admin's start page, `/`
    GET /admin/webhooks      the tenant's webhook endpoints and e-mail subscriptions, each with its
                             latest delivery attempts (`manage_webhooks`)
    GET /admin/instruments   the instrument registry as this tenant may use it: free and public-domain
                             measures, and the licensed ones `RAPPORT_LICENSED_INSTRUMENTS` lists for
                             the tenant (`read_instruments`)

The targets and attempts are read through the notifications package's repository (the functions
its API uses, `targets_in_scope` and `attempts_for`), in the admin's scope: the whole tenant. Secrets
are never shown, only their fingerprints. Reading a target's attempts is audited as the API audits
it (`manage_webhooks`, `read_attempts`, the target's id); reading the instruments as
`read_instruments`. Changing a target stays with the API (/api/v1/webhooks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.gateway.audit import AuditTrail
from rapport.services.gateway.notifications.domain import Channel, Scope, fingerprint
from rapport.services.gateway.notifications.models import EmailSubscription, WebhookEndpoint
from rapport.services.gateway.notifications.repository import AttemptSeen, attempts_for, targets_in_scope
from rapport.services.gateway.pages import page_principal
from rapport.services.gateway.signin import SignIn
from rapport.services.gateway.tokens import Principal
from rapport.services.gateway.views import Views
from rapport.shared.instruments import Registry, load_registry
from rapport.shared.settings import Settings

ATTEMPTS_SHOWN = 20
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


async def targets_with_attempts(session: AsyncSession, tenant: str) -> list[TargetShown]:
    scope = Scope(tenant, None)
    found: list[TargetShown] = []
    for channel in ("webhook", "email"):
        for row in await targets_in_scope(session, channel, scope):
            attempts = await attempts_for(session, row.id, ATTEMPTS_SHOWN)
            if isinstance(row, WebhookEndpoint):
                found.append(TargetShown("webhook", row.id, row.url, row.clinician_id, row.description,
                                         row.created_at, row.created_by, fingerprint(row.secret), attempts))
            elif isinstance(row, EmailSubscription):
                found.append(TargetShown("email", row.id, row.address, row.clinician_id, "", row.created_at,
                                         row.created_by, None, attempts))
    return found


RESOURCE: dict[str, str] = {"webhook": "webhook", "email": "email-subscription"}


async def admin_start_page(views: Views, request: Request, principal: Principal) -> Response:
    """At `/admin`, and at `/` for an admin (pages.py's start page for the role)."""
    return views.render(request, "admin.html")


def admin_router(sessions: async_sessionmaker[AsyncSession], sign_in: SignIn, audit: AuditTrail, views: Views,
                 settings: Settings, *, registry: Registry | None = None) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    instruments = registry or load_registry()

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
