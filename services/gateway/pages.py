"""The dashboard's pages, served at `/` by the gateway with the same sign-in as the API: the start
page for each role (a clinician's is their worklist, worklist.py) and the admin's audit trail.

A page answers the way the API does, in HTML: no session, 401 with how to sign in; a role that may
not use the page, 403 with which role it is for. The pages take the principal from
`SignIn.principal_of`, so a bearer token works as well as the session cookie.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from rapport.services.gateway.audit import AuditTrail, cursor_for, describe_filters, filters_from, page_of
from rapport.services.gateway.http import Refused
from rapport.services.gateway.signin import SignIn
from rapport.services.gateway.tokens import Principal
from rapport.services.gateway.views import Views
from rapport.services.gateway.worklist import WorklistPage

AUDIT_PAGE = 50
FILTER_FIELDS = ("subject", "action", "resource", "since", "until")
# a role's own start page at `/`, other than the clinician's worklist
StartPage = Callable[[Request, Principal], Awaitable[Response]]


async def page_principal(sign_in: SignIn, request: Request, action: str) -> Principal | Response:
    """The caller, or the page that refuses them."""
    await sign_in.signed_in(request)  # so the layout names who is signed in, whatever the outcome
    try:
        return await sign_in.principal_of(request, action)
    except Refused as refused:
        if refused.status == 401:
            return sign_in.views.message(request, 401, "Sign in", "This page needs you to be signed in.")
        return sign_in.views.message(request, refused.status, "Not for your role" if refused.status == 403
                                     else "Refused", refused.message)


def pages_router(sign_in: SignIn, audit: AuditTrail, views: Views, *,
                 worklist: WorklistPage | None = None, start_pages: Mapping[str, StartPage] | None = None) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def start(request: Request) -> Response:
        principal = await page_principal(sign_in, request, "use_dashboard")
        if isinstance(principal, Response):
            return principal
        if principal.role == "clinician" and worklist is not None:
            return await worklist.render(request, principal)
        start = (start_pages or {}).get(principal.role or "")
        if start is not None:  # the lead's figures (lead_pages.py), the admin's pages (admin_pages.py)
            return await start(request, principal)
        return views.render(request, "home.html", worklist=worklist is not None)

    @router.get("/audit")
    async def audit_page(request: Request) -> Response:
        principal = await page_principal(sign_in, request, "read_audit")
        if isinstance(principal, Response):
            return principal
        asked = {name: request.query_params.get(name, "") for name in FILTER_FIELDS}
        try:
            filters = filters_from(request, principal.tenant)
            before, _ = page_of(request)
        except Refused as refused:
            return views.render(request, "audit.html", 400, entries=[], asked=asked, problem=refused.message,
                                next_cursor=None, next_link="")
        entries = await audit.entries(filters, before=before, limit=AUDIT_PAGE)
        await audit.record(action="read_audit", outcome=200, principal=principal, request=request,
                           detail=describe_filters(filters))
        next_cursor = cursor_for(entries[-1].id) if len(entries) == AUDIT_PAGE else None
        kept = {k: v for k, v in asked.items() if k != "cursor" and v}
        next_link = "/audit?" + urlencode({**kept, "cursor": next_cursor}) if next_cursor else ""
        return views.render(request, "audit.html", entries=entries, asked=asked, problem=None,
                            next_cursor=next_cursor, next_link=next_link)

    return router

