"""The dashboard's part of the composition root: sign-in, the audit trail and the pages, built once
by `app.build` and handed to every router that needs who is calling (`principal_of`) or the audit
trail (`audit.record`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from fastapi import APIRouter, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.gateway.admin_pages import admin_router, admin_start_page
from rapport.services.gateway.audit import AuditTrail, audit_router
from rapport.services.gateway.client_view import client_view_router
from rapport.services.gateway.http import Gate
from rapport.services.gateway.lead_pages import LeadPage, lead_router
from rapport.services.gateway.oidc import OidcVerifier
from rapport.services.gateway.oidc_sign_in import CodeFlow, origin_of
from rapport.services.gateway.pages import StartPage, pages_router
from rapport.services.gateway.records import Records
from rapport.services.gateway.signin import SignIn
from rapport.services.gateway.tokens import Principal, load_signing_key
from rapport.services.gateway.views import Views, static_router
from rapport.services.gateway.worklist import AlertSource, WorklistPage, worklist_router
from rapport.shared.db.group_commit import GroupCommit
from rapport.shared.periodic import Periodic
from rapport.shared.settings import Settings


@dataclass
class Dashboard:
    sign_in: SignIn
    audit: AuditTrail
    views: Views
    routers: list[APIRouter] = field(default_factory=list)
    background: list[Periodic] = field(default_factory=list)

    async def principal_of(self, request: Request, action: str) -> Principal:
        """The caller by bearer token or session cookie (see signin.py), allowed to do `action`."""
        return await self.sign_in.principal_of(request, action)


def dashboard(settings: Settings, sessions: async_sessionmaker[AsyncSession], gate: Gate, *,
              clock: Callable[[], datetime], alerts: AlertSource | None = None,
              writes: GroupCommit | None = None) -> Dashboard:
    """`alerts`: where the worklist reads and sends commands (without it, `/` has no worklist);
    `writes`: the group commit the audit rows of submissions share with the records of messages."""
    audit = AuditTrail(sessions, clock, writes)
    views = Views()
    key_file = settings.resolved_token_key_file()
    # login links are the embedded stack's: with an OIDC issuer (or no key) /sign-in refuses them
    link_key = load_signing_key(key_file).public_key() if not settings.oidc_issuer and key_file.exists() else None
    sign_in = SignIn(gate, sessions, audit, views, link_key=link_key, audience=settings.oidc_audience, clock=clock)
    routers = [sign_in.router(), audit_router(audit, sign_in), static_router()]
    views.environment.globals["oidc_sign_in"] = bool(settings.oidc_client_id)
    if settings.oidc_client_id:
        if not isinstance(gate.verifier, OidcVerifier):
            raise RuntimeError("RAPPORT_OIDC_CLIENT_ID is set without RAPPORT_OIDC_ISSUER: the dashboard's sign-in "
                               "needs the issuer it signs in with")
        flow = CodeFlow(gate.verifier, sign_in, client_id=settings.oidc_client_id,
                        client_secret=settings.oidc_client_secret, public_url=settings.resolved_public_url())
        routers.append(flow.router())
        # Sign out of a session the provider opened ends the provider's too, where it says how
        sign_in.provider_sign_out = flow.end_session_url
        views.allow_form_redirects_to(origin_of(settings.oidc_issuer or ""))
    worklist = WorklistPage(alerts, audit, views) if alerts is not None else None
    if worklist is not None:
        routers.append(worklist_router(worklist, sign_in))
    lead = LeadPage(sessions, audit, views)
    start_pages: dict[str, StartPage] = {"lead": lead.render, "admin": partial(admin_start_page, views)}
    routers.append(pages_router(sign_in, audit, views, worklist=worklist, start_pages=start_pages))
    routers += [lead_router(sessions, sign_in, audit, views, lead),
                admin_router(sessions, sign_in, audit, views, settings, clock=clock)]
    routers.append(client_view_router(Records(sessions), sign_in, audit, views))  # /clients/...
    return Dashboard(sign_in, audit, views, routers,
                     [Periodic("gateway-sign-in-pruning", 3600, sign_in.prune)])
