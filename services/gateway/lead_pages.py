"""The clinical lead's dashboard (issue 12 item 3), role lead (`read_figures`):

    GET /api/v1/figures                the figures (lead_figures.py) for the token's tenant, filters
                                       clinician, since, until (days, YYYY-MM-DD, both included)
    GET /api/v1/figures/alerts         the alerts behind one figure: the same filters and the
                                       figure's own (figure, kind, clinician or unassigned=1)
    GET /lead                          the figures as a page, a GET form of the filters (also a
                                       lead's start page, `/`)
    GET /lead/alerts                   the alerts behind one figure as a page

The tenant is always the caller's (token or session): another tenant's figures cannot be asked for.
Every answered read is a row of the audit trail (`read_figures`, the filters' names, never values);
refusals (401, 403) are recorded by the sign-in check. Every figure on the page is a link to the
alerts behind it, and each figure says what it counts in words next to the number.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select, union
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.gateway.audit import AuditTrail
from rapport.services.gateway.http import Refused, may
from rapport.services.gateway.lead_figures import (
    FIGURES,
    UNASSIGNED,
    Behind,
    FigureFilters,
    alerts_behind,
    alerts_table,
    figures,
    scores_table,
)
from rapport.services.gateway.pages import page_principal
from rapport.services.gateway.records import AlertShown
from rapport.services.gateway.signin import SignIn
from rapport.services.gateway.tokens import Principal
from rapport.services.gateway.views import Views
from rapport.shared.contracts.alert import Alert
from rapport.shared.contracts.tenancy import SUBJECT_TOKEN_PATTERN

KINDS = ("critical_item", "alliance_rupture", "reliable_deterioration", "not_on_track", "disengagement")
FIGURE_WORDS: dict[str, str] = {
    "open": "open alerts raised in the period",
    "acknowledgement": "alerts raised in the period, acknowledged or waiting for it",
    "not_on_track": "open not-on-track alerts on episodes scored in the period",
    "ruptures": "alliance ruptures raised in the period",
    "ruptures_repaired": "alliance ruptures raised in the period and resolved as repaired",
}


def filters_from(request: Request) -> FigureFilters:
    """The lead's filters from the query, or Refused (400) naming the field."""
    query = request.query_params
    clinician = query.get("clinician") or None
    if clinician is not None and not SUBJECT_TOKEN_PATTERN.fullmatch(clinician):
        raise Refused(400, "invalid_clinician", "clinician must be a clinician id (letters, digits, _ and -)",
                      field="clinician")
    since, until = _day(query.get("since"), "since"), _day(query.get("until"), "until")
    if since and until and until < since:
        raise Refused(400, "invalid_period", "until must be on or after since", field="until")
    return FigureFilters(clinician=clinician, since=since, until=until)


def _day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise Refused(400, "invalid_day", f"{name} must be a day, YYYY-MM-DD", field=name) from None


def behind_from(request: Request, filters: FigureFilters) -> Behind:
    query = request.query_params
    figure = query.get("figure", "")
    if figure not in FIGURES:
        raise Refused(400, "invalid_figure", f"figure must be one of {', '.join(FIGURES)}", field="figure")
    kind = query.get("kind") or None
    if kind is not None and kind not in KINDS:
        raise Refused(400, "invalid_kind", f"kind must be one of {', '.join(KINDS)}", field="kind")
    clinician = UNASSIGNED if query.get("unassigned") == "1" else filters.clinician
    return Behind(figure, kind=kind, clinician=clinician)


def described(filters: FigureFilters, behind: Behind | None = None) -> str:
    """The audit row's detail: which filters were used, never their values."""
    asked = [name for name in ("clinician", "since", "until") if getattr(filters, name)]
    head = f"figure {behind.figure} " if behind else ""
    return (head + ("filters " + ",".join(asked) if asked else "")).strip()[:64] or "all"


async def clinicians_of(session: AsyncSession, tenant: str) -> list[str]:
    """The clinicians named by the tenant's alerts or scores, for the filter's choices."""
    found = union(
        select(alerts_table.c.clinician_id.label("clinician")).where(alerts_table.c.tenant == tenant,
                                                                     alerts_table.c.clinician_id.is_not(None)),
        select(scores_table.c.clinician_id.label("clinician")).where(scores_table.c.tenant == tenant,
                                                                     scores_table.c.clinician_id.is_not(None)))
    return sorted({row[0] for row in (await session.execute(found)).all()})


def _shown(row: Any) -> AlertShown:
    return AlertShown.of(Alert.model_validate(row.alert), row.headline, row.evidence_words)


class LeadPage:
    """The figures as a page: at `/lead`, and at `/` for a lead (pages.py's start page for the role)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], audit: AuditTrail, views: Views) -> None:
        self._sessions, self.audit, self.views = sessions, audit, views

    async def render(self, request: Request, principal: Principal) -> Response:
        if not may(principal, "read_figures"):
            return self.views.message(request, 403, "Not for your role", "the figures are for role lead")
        asked = {name: request.query_params.get(name, "") for name in ("clinician", "since", "until")}
        async with self._sessions() as session:
            choices = await clinicians_of(session, principal.tenant)
            try:
                filters = filters_from(request)
            except Refused as refused:
                return self.views.render(request, "lead.html", 400, figures=None, shown=None, asked=asked,
                                         clinicians=choices, problem=refused.message)
            found = await figures(session, principal.tenant, filters)
        await self.audit.record(action="read_figures", outcome=200, principal=principal, request=request,
                                resource="figures", detail=described(filters))
        return self.views.render(request, "lead.html", figures=found, shown=found.as_json(), asked=asked,
                                 clinicians=choices, problem=None)


def lead_router(sessions: async_sessionmaker[AsyncSession], sign_in: SignIn, audit: AuditTrail,
                views: Views, page: LeadPage) -> APIRouter:
    router = APIRouter()
    refusals: dict[int | str, dict[str, Any]] = {
        400: {"description": "a filter that is not a clinician id or a day"},
        401: {"description": "no valid token or session"}, 403: {"description": "the role is not lead"}}

    @router.get("/api/v1/figures", tags=["figures"], responses=refusals,
                summary="The clinical lead's figures for the caller's tenant (role lead)")
    async def api_figures(request: Request) -> Response:
        principal = await sign_in.principal_of(request, "read_figures")
        filters = filters_from(request)
        async with sessions() as session:
            found = await figures(session, principal.tenant, filters)
        await audit.record(action="read_figures", outcome=200, principal=principal, request=request,
                           resource="figures", detail=described(filters))
        return JSONResponse({"tenant": principal.tenant, **found.as_json()})

    @router.get("/api/v1/figures/alerts", tags=["figures"], responses=refusals, response_model=list[AlertShown],
                summary="The alerts behind one figure, most urgent first (role lead)")
    async def api_alerts_behind(request: Request) -> list[AlertShown]:
        principal = await sign_in.principal_of(request, "read_figures")
        filters = filters_from(request)
        behind = behind_from(request, filters)
        async with sessions() as session:
            rows = await alerts_behind(session, principal.tenant, filters, behind)
        await audit.record(action="read_figures", outcome=200, principal=principal, request=request,
                           resource="figures/alerts", detail=described(filters, behind))
        return [_shown(r) for r in rows]

    @router.get("/lead", include_in_schema=False)
    async def lead_page(request: Request) -> Response:
        principal = await page_principal(sign_in, request, "read_figures")
        if isinstance(principal, Response):
            return principal
        return await page.render(request, principal)

    @router.get("/lead/alerts", include_in_schema=False)
    async def lead_alerts_page(request: Request) -> Response:
        principal = await page_principal(sign_in, request, "read_figures")
        if isinstance(principal, Response):
            return principal
        try:
            filters = filters_from(request)
            behind = behind_from(request, filters)
        except Refused as refused:
            return views.message(request, 400, "Not a figure", refused.message)
        async with sessions() as session:
            rows = await alerts_behind(session, principal.tenant, filters, behind)
        await audit.record(action="read_figures", outcome=200, principal=principal, request=request,
                           resource="figures/alerts", detail=described(filters, behind))
        back = "/lead" + (f"?{urlencode(filters.query())}" if filters.query() else "")
        return views.render(request, "lead_alerts.html", alerts=[_shown(r) for r in rows], behind=behind,
                            words=FIGURE_WORDS[behind.figure], filters=filters, back=back)

    return router
