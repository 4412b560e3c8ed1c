"""The therapist's worklist at `/` (issue 12 item 1): their open alerts, most urgent first, each
with its headline, the evidence in words and the repair prompt, acknowledged or resolved in place,
updated live.

The page reads through `AlertSource`, not a table: what the clinician may see and how a command
reaches the alerts service (the one writer of alerts, over the broker) are the read model's and the
commander's business (records.py, live.py); `InMemoryAlerts` is the same face over a list, for tests
and for a page without a broker.

Order: risk (critical-item) alerts first, then by severity (critical, high, medium, low), then the
oldest first, since the one waiting longest is the most overdue. Acknowledged alerts stay on the
list, marked, until they are resolved.

Forms work without scripts (a POST and a redirect back to `/`); with htmx they are sent in place and
the server answers with the alert's new card. Every form carries the session's CSRF token. Live
updates: `/worklist/events` is a Server-Sent Events stream of "something changed on your list";
static/rapport.js then fetches `/worklist/items` (the list alone) through htmx. Every read of the
list, and every command, is recorded in the audit trail with the alert ids it touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from rapport.services.gateway.audit import AuditTrail
from rapport.services.gateway.http import Refused
from rapport.services.gateway.signin import SignIn, form_fields
from rapport.services.gateway.tokens import Principal
from rapport.services.gateway.views import SECURITY_HEADERS, Views
from rapport.shared.contracts.alert import Alert, Evidence

SEVERITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}
MAX_REASON = 500
HEARTBEAT_SECONDS = 15.0

TITLES = {
    "critical_item": "Risk item endorsed",
    "alliance_rupture": "Alliance rupture",
    "reliable_deterioration": "Reliable deterioration",
    "not_on_track": "Not on track",
}
KIND_WORDS = {
    "critical_item": "risk",
    "alliance_rupture": "alliance",
    "reliable_deterioration": "deterioration",
    "not_on_track": "not on track",
}
# evidence values a therapist reads in ten seconds, in reading order, with their words
SHOWN = [
    ("session", "session {}"), ("previous", "previous {}"), ("baseline", "baseline {}"),
    ("concern_cutoff", "concern cutoff {}"), ("own_mean", "own mean {}"), ("z", "z {}"),
    ("reliable_change", "reliable change {}"), ("level_to_regain", "repaired at {} or above"),
    ("checkpoint", "checkpoint session {}"), ("expected", "expected {}"), ("boundary", "off track beyond {}"),
]


@dataclass(frozen=True)
class WorklistEntry:
    """One alert as the list shows it: the alert, and its finding and evidence in words."""

    alert: Alert
    headline: str
    evidence_words: str
    # (transition, by, at, reason), oldest first: only where one alert is shown on its own page
    history: tuple[tuple[str, str, datetime, str | None], ...] = ()

    @property
    def urgency(self) -> tuple[int, int, datetime, str]:
        a = self.alert
        return (0 if a.kind == "critical_item" else 1, SEVERITY_RANK.get(a.severity, 9), a.opened_at, a.alert_id)


def _plain(value: object) -> str:
    return f"{round(value, 2):g}" if isinstance(value, float) else str(value)


def entry_of(alert: Alert) -> WorklistEntry:
    """Words for an alert whose source has none of its own (the read model keeps the alerts
    service's words for each transition; this is the same reading of the latest evidence)."""
    latest: Evidence | None = alert.evidence[-1] if alert.evidence else None
    part = f" ({', '.join(alert.parts_named)})" if alert.parts_named else ""
    headline = latest.summary if latest else TITLES[alert.kind] + part
    if alert.priority_raised:
        headline = f"Priority, not on track with a falling alliance. {headline}"
    if latest is None:
        return WorklistEntry(alert, headline, "")
    name = str(latest.values.get("instrument_name", latest.instrument)) + (f" {alert.subscale}" if alert.subscale
                                                                           else "")
    shown = latest.values.get("value", latest.score) if alert.subscale else latest.score
    numbers = [words.format(_plain(latest.values[key])) for key, words in SHOWN if key in latest.values]
    said = ", ".join([f"{name} {_plain(shown)} on {latest.administered_at.date().isoformat()}", *numbers]) + "."
    sources = f" ({', '.join(latest.sources)})" if latest.sources else ""
    return WorklistEntry(alert, headline, f"{said} Rule {latest.rule_id} v{latest.rule_version}{sources}.")


@dataclass(frozen=True)
class Acted:
    """What a command did: `done` (the alert as it now stands), `refused` (it changed nothing, and
    why), `pending` (sent; the alerts service did not answer in time), `not_found`, `unavailable`
    (nothing was sent: the broker did not take it)."""

    outcome: Literal["done", "refused", "pending", "not_found", "unavailable"]
    entry: WorklistEntry | None = None
    reason: str | None = None


class AlertSource(Protocol):
    async def open_alerts(self, principal: Principal) -> Sequence[WorklistEntry]:
        """The clinician's alerts that are not resolved (any order)."""
        ...

    async def act(self, principal: Principal, alert_id: str, action: Literal["acknowledge", "resolve"],
                  reason: str | None) -> Acted: ...

    def changes(self, principal: Principal) -> AsyncIterator[str]:
        """One item (an event name) each time something on the principal's list changed."""
        ...

    async def alert(self, principal: Principal, alert_id: str) -> WorklistEntry | None:
        """One alert the principal may see, resolved or not, with its history; None otherwise."""
        ...


class WorklistPage:
    """`/` for a clinician (pages.py asks it to render), and the list alone for live refreshes."""

    def __init__(self, source: AlertSource, audit: AuditTrail, views: Views) -> None:
        self.source, self.audit, self.views = source, audit, views

    async def entries(self, request: Request, principal: Principal) -> list[WorklistEntry]:
        entries = ordered(await self.source.open_alerts(principal))
        await self.audit.record(action="read_alerts", outcome=200, principal=principal, request=request,
                                resource="worklist", detail=f"{len(entries)} alerts")
        return entries

    async def render(self, request: Request, principal: Principal) -> Response:
        return self.views.render(request, "worklist.html", entries=await self.entries(request, principal),
                                 problem=None, problem_for=None, said=None)


class InMemoryAlerts:
    """An `AlertSource` over alerts held in memory: a clinician sees those naming them."""

    def __init__(self, alerts: Sequence[Alert] = ()) -> None:
        self._alerts: dict[tuple[str, str], Alert] = {(a.tenant, a.alert_id): a for a in alerts}
        self._watchers: list[tuple[Principal, asyncio.Queue[str]]] = []

    def _visible(self, principal: Principal, alert: Alert) -> bool:
        return alert.tenant == principal.tenant and (
            principal.role == "lead" or (principal.clinician is not None and alert.clinician_id == principal.clinician))

    async def open_alerts(self, principal: Principal) -> Sequence[WorklistEntry]:
        return [entry_of(a) for a in self._alerts.values() if self._visible(principal, a) and a.status != "resolved"]

    async def alert(self, principal: Principal, alert_id: str) -> WorklistEntry | None:
        found = self._alerts.get((principal.tenant, alert_id))
        return entry_of(found) if found is not None and self._visible(principal, found) else None

    def put(self, alert: Alert, event: str = "alert.raised") -> None:
        """A transition arrives (as the feed would bring it)."""
        self._alerts[(alert.tenant, alert.alert_id)] = alert
        for principal, queue in self._watchers:
            if self._visible(principal, alert):
                queue.put_nowait(event)

    async def act(self, principal: Principal, alert_id: str, action: Literal["acknowledge", "resolve"],
                  reason: str | None) -> Acted:
        alert = self._alerts.get((principal.tenant, alert_id))
        if alert is None or not self._visible(principal, alert):
            return Acted("not_found")
        if alert.status == "resolved" or (action == "acknowledge" and alert.status == "acknowledged"):
            return Acted("refused", entry_of(alert), f"the alert is {alert.status} already")
        changed = alert.model_copy(update={
            "status": "acknowledged" if action == "acknowledge" else "resolved", "version": alert.version + 1,
            **({"resolution": "by_hand", "resolved_reason": reason} if action == "resolve" else {})})
        self.put(changed, f"alert.{'updated' if action == 'acknowledge' else 'resolved'}")
        return Acted("done", entry_of(changed))

    async def changes(self, principal: Principal) -> AsyncIterator[str]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        watcher = (principal, queue)
        self._watchers.append(watcher)
        try:
            while True:
                yield await queue.get()
        finally:
            self._watchers.remove(watcher)


def ordered(entries: Sequence[WorklistEntry]) -> list[WorklistEntry]:
    return sorted((e for e in entries if e.alert.status != "resolved"), key=lambda e: e.urgency)


STATUS_CODES = {"done": 200, "refused": 409, "pending": 202, "not_found": 404, "unavailable": 503}


def worklist_router(page: WorklistPage, sign_in: SignIn, *, heartbeat_seconds: float = HEARTBEAT_SECONDS,
                    ) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    source, audit, views = page.source, page.audit, page.views

    @router.get("/worklist/items")
    async def items(request: Request) -> Response:
        try:
            principal = await sign_in.principal_of(request, "read_alerts")
        except Refused as refused:
            return views.message(request, refused.status, "Refused", refused.message)
        return views.render(request, "worklist_items.html", entries=await page.entries(request, principal))

    async def command(request: Request, alert_id: str, action: Literal["acknowledge", "resolve"]) -> Response:
        await sign_in.signed_in(request)
        audited = f"{action}_alert"
        try:
            principal = await sign_in.principal_of(request, "act_on_alerts", audited_as=audited)
        except Refused as refused:
            return views.message(request, refused.status, "Refused", refused.message)
        in_place = request.headers.get("hx-request") == "true"
        reason = ((await form_fields(request)).get("reason") or "").strip() or None
        if action == "resolve" and (reason is None or len(reason) > MAX_REASON):
            await audit.record(action=audited, outcome=422, principal=principal, request=request,
                               resource=f"alert/{alert_id}", detail="reason_required")
            problem = f"Say why it is resolved (1 to {MAX_REASON} characters)."
            current = next((e for e in await source.open_alerts(principal) if e.alert.alert_id == alert_id), None)
            if current is None:
                return views.message(request, 404, "No such alert", "This alert is not on your list.")
            return views.render(request, "worklist_card.html" if in_place else "worklist.html", 422,
                                entry=current, problem=problem, problem_for=alert_id, said=None,
                                entries=ordered(await source.open_alerts(principal)))
        acted = await source.act(principal, alert_id, action, reason if action == "resolve" else None)
        status = STATUS_CODES[acted.outcome]
        await audit.record(action=audited, outcome=status, principal=principal, request=request,
                           resource=f"alert/{alert_id}", detail=acted.outcome if acted.outcome != "done" else None)
        if not in_place:
            return RedirectResponse("/", status_code=303)
        if acted.entry is None:
            return views.render(request, "worklist_gone.html", status, said="This alert is not on your list.",
                                alert_id=alert_id)
        said = {"done": "Acknowledged." if action == "acknowledge" else "Resolved.",
                "refused": f"Nothing changed: {acted.reason}." if acted.reason else "Nothing changed.",
                "pending": "Sent; it will show here once the alerts service has it.",
                "unavailable": "Not sent: Rapport cannot reach its broker just now. Try again in a moment.",
                }.get(acted.outcome)
        entry = acted.entry
        if entry.alert.status == "resolved":
            return views.render(request, "worklist_gone.html", status, said=f"Resolved: {entry.headline}",
                                alert_id=alert_id)
        return views.render(request, "worklist_card.html", status, entry=entry, said=said, problem=None,
                            problem_for=None)

    @router.get("/alerts/{alert_id}")
    async def one_alert(request: Request, alert_id: str) -> Response:
        """The page a notification links to: the alert's card and its history (404 when it is not
        the caller's, as for one that does not exist)."""
        await sign_in.signed_in(request)
        try:
            principal = await sign_in.principal_of(request, "read_alerts")
        except Refused as refused:
            if refused.status == 401:
                return views.message(request, 401, "Sign in", "This page needs you to be signed in.")
            return views.message(request, refused.status, "Not for your role", refused.message)
        entry = await source.alert(principal, alert_id)
        await audit.record(action="read_alerts", outcome=200 if entry else 404, principal=principal,
                           request=request, resource=f"alert/{alert_id}")
        if entry is None:
            return views.message(request, 404, "No such alert", "There is no alert of yours with this id.")
        return views.render(request, "alert.html", entry=entry)

    @router.post("/worklist/alerts/{alert_id}/acknowledge")
    async def acknowledge(request: Request, alert_id: str) -> Response:
        return await command(request, alert_id, "acknowledge")

    @router.post("/worklist/alerts/{alert_id}/resolve")
    async def resolve(request: Request, alert_id: str) -> Response:
        return await command(request, alert_id, "resolve")

    @router.get("/worklist/events")
    async def events(request: Request) -> Response:
        try:
            principal = await sign_in.principal_of(request, "read_alerts")
        except Refused as refused:
            return Response(refused.message, refused.status, media_type="text/plain")

        async def stream() -> AsyncIterator[bytes]:
            yield b"retry: 3000\n: connected\n\n"
            changes = source.changes(principal).__aiter__()
            waiting: asyncio.Task[str] | None = None
            try:
                while True:
                    waiting = waiting or asyncio.ensure_future(changes.__anext__())
                    done, _ = await asyncio.wait({waiting}, timeout=heartbeat_seconds)
                    if not done:
                        yield b": heartbeat\n\n"
                        continue
                    event = waiting.result()
                    waiting = None
                    yield f"event: changed\ndata: {json.dumps({'kind': event})}\n\n".encode()
            except StopAsyncIteration:
                return
            finally:
                if waiting is not None:
                    waiting.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await waiting
                close = getattr(changes, "aclose", None)
                if close is not None:
                    await close()

        headers = {**SECURITY_HEADERS, "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    return router

