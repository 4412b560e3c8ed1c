"""The worklist's `AlertSource` over the gateway's own read model (records.py) and the commands
that travel to the alerts service (live.py): what a clinician sees is what `/api/v1/alerts` gives
them, and a command for an alert they cannot see is never sent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Literal

from rapport.services.gateway.live import AlertCommander, AlertFeed, CommandRefused, shown
from rapport.services.gateway.records import MAX_PAGE, AlertFilters, AlertShown, Records, Viewer
from rapport.services.gateway.tokens import Principal
from rapport.services.gateway.worklist import Acted, WorklistEntry
from rapport.shared.contracts.alert import Alert
from rapport.shared.messaging.ingress import BrokerUnavailable

UNRESOLVED = AlertFilters(status=("open", "acknowledged"))


def entry_from(tenant: str, alert: AlertShown) -> WorklistEntry:
    fields = alert.model_dump(exclude={"headline", "evidence_words", "transitions"})
    history = tuple((t.transition, t.by, t.at, t.reason) for t in alert.transitions)
    return WorklistEntry(Alert.model_validate({**fields, "tenant": tenant}), alert.headline, alert.evidence_words,
                         history)


class RecordsAlerts:
    def __init__(self, records: Records, commander: AlertCommander, feed: AlertFeed) -> None:
        self.records, self.commander, self.feed = records, commander, feed

    async def open_alerts(self, principal: Principal) -> Sequence[WorklistEntry]:
        viewer, entries, offset = Viewer.of(principal), [], 0
        while True:
            page = await self.records.alerts(viewer, UNRESOLVED, offset=offset, limit=MAX_PAGE)
            entries += [entry_from(principal.tenant, a) for a in page.alerts]
            offset += len(page.alerts)
            if not page.alerts or offset >= page.total:
                return entries

    async def act(self, principal: Principal, alert_id: str, action: Literal["acknowledge", "resolve"],
                  reason: str | None) -> Acted:
        current = await self.records.alert(Viewer.of(principal), alert_id)
        if current is None:
            return Acted("not_found")
        try:
            answer = await self.commander.send(principal, alert_id, action, reason)
        except BrokerUnavailable:
            return Acted("unavailable", entry_from(principal.tenant, current))
        if answer is None:
            return Acted("pending", entry_from(principal.tenant, current))
        if isinstance(answer, CommandRefused):
            return Acted("refused", entry_from(principal.tenant, current), answer.reason)
        return Acted("done", entry_from(principal.tenant, shown(answer)))

    async def alert(self, principal: Principal, alert_id: str) -> WorklistEntry | None:
        found = await self.records.alert(Viewer.of(principal), alert_id)
        return entry_from(principal.tenant, found) if found is not None else None

    async def changes(self, principal: Principal) -> AsyncIterator[str]:
        stream = await self.feed.open(Viewer.of(principal))
        try:
            while True:
                live = await stream.queue.get()
                if live is None:  # fell behind: end the stream, the browser reconnects and refetches
                    return
                yield f"alert.{live.verb}"
        finally:
            self.feed.close(stream)
