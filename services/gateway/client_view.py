"""The client view (issue 12 item 2): one client's episode at `/clients/{client}/episodes/{episode}`,
the client's episodes at `/clients/{client}`, linked from each worklist card and from `/alerts/<id>`.

It reads through `Records` (records.py), the same read model and the same `Viewer` as
`GET /api/v1/clients/{client}/episodes/{episode}/scores`, so a page shows what the API answers: a
clinician sees only the episodes that name them, a lead the tenant's; anything else is a 404 page
that says not found, exactly as for a client that does not exist. Every read is a `read_records`
row of the audit trail (ids only).

The charts are SVG written on the server from the geometry in charts.py: no charting library, no
script, nothing loaded from elsewhere (clinics run air-gapped), and each point and marker carries
its numbers as data attributes, so a test reads the data and a person with the table below reads
the same numbers.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from rapport.services.gateway.audit import AuditTrail
from rapport.services.gateway.charts import episode_charts, shape_path
from rapport.services.gateway.pages import page_principal
from rapport.services.gateway.records import Records, Viewer
from rapport.services.gateway.signin import SignIn
from rapport.services.gateway.views import Views

# instruments as a therapist knows them (the alerts service has its own list; no service imports another's)
NAMES = {"phq9": "PHQ-9", "phq2": "PHQ-2", "gad7": "GAD-7", "gad2": "GAD-2", "srs": "SRS", "ors": "ORS",
         "waisr": "WAI-SR", "core10": "CORE-10", "k10": "K10", "pcl5": "PCL-5", "sai": "SAI"}


def client_view_router(records: Records, sign_in: SignIn, audit: AuditTrail, views: Views) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/clients/{client_id}")
    async def client(request: Request, client_id: str) -> Response:
        principal = await page_principal(sign_in, request, "read_records")
        if isinstance(principal, Response):
            return principal
        found = await records.episodes(Viewer.of(principal), client_id)
        await audit.record(action="read_records", outcome=200 if found else 404, principal=principal,
                           request=request, resource=f"client/{client_id}")
        if found is None:
            return views.message(request, 404, "Not found", "There is no client of yours with this id.")
        return views.render(request, "client.html", client_id=client_id, episodes=found, names=NAMES)

    @router.get("/clients/{client_id}/episodes/{episode_id}")
    async def episode(request: Request, client_id: str, episode_id: str) -> Response:
        principal = await page_principal(sign_in, request, "read_records")
        if isinstance(principal, Response):
            return principal
        found = await records.episode(Viewer.of(principal), client_id, episode_id)
        await audit.record(action="read_records", outcome=200 if found else 404, principal=principal,
                           request=request, resource=f"client/{client_id}/episode/{episode_id}")
        if found is None:
            return views.message(request, 404, "Not found",
                                 "There is no episode of yours with this client and episode id.")
        charts = episode_charts(found, NAMES)
        return views.render(request, "client_episode.html", record=found, charts=charts, names=NAMES,
                            shape_path=shape_path)

    return router
