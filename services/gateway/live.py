"""What happens to a tenant's alerts as it happens: the feed behind `/api/v1/events` (Server-Sent
Events) and behind the answers to clinicians' commands.

`AlertFeed` follows a tenant's `alert.*` (an ordered ephemeral consumer from the next event on, so
every gateway replica sees every event, unlike the projection's shared durable consumer, and each
comes with its position in the RAPPORT stream) and listens to its `alert-command.rejected` from the
first request for that tenant on, and hands each event to the commands waiting for it and to the
open event streams. `AlertCommander` sends acknowledge / resolve to the alerts service (the one
writer of alerts) over the broker and waits, bounded, for what it did.

Resuming (`missed`): an event stream's ids are the events' stream sequences, so a caller that
reconnects with `Last-Event-ID` is given what the stream holds for its tenant after that position
(read from the broker, not the read model: the read model keeps each alert as it is now, not every
event in the order it was sent, and the ids of the live events are the stream's), filtered as the
live events are, at most `RESUME_LIMIT` events and only while the stream keeps them
(`RAPPORT_EVENT_RETENTION_DAYS`); beyond that the caller is told it cannot resume.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import ValidationError

from rapport.services.gateway.records import AlertShown, Viewer
from rapport.services.gateway.tokens import Principal
from rapport.shared.contracts.alert import AlertCommand, AlertTransition
from rapport.shared.contracts.envelope import CloudEvent
from rapport.shared.contracts.tenancy import ID_PATTERN
from rapport.shared.messaging import subjects
from rapport.shared.messaging.ingress import Ingress, NotReplayable

log = logging.getLogger("rapport.gateway")

# an open stream that falls this far behind is closed: the browser reconnects and reloads
STREAM_BACKLOG = 1000
# the most of a tenant's alert events a reconnecting stream is given (before the caller's filter)
RESUME_LIMIT = 1000
COMMAND_PREFIX = "http-command-"


@dataclass(frozen=True)
class LiveTransition:
    event_id: str
    verb: str  # raised | updated | resolved
    transition: AlertTransition
    cause: str | None  # the command id a clinician's transition answers
    sequence: int | None = None  # where the event is in the RAPPORT stream: the event stream's id


@dataclass(frozen=True)
class CommandRefused:
    reason: str


@dataclass(frozen=True)
class Missed:
    """What a reconnecting viewer missed, oldest first, and up to where the stream was read (live
    events at or before `through` are among these, or were not the viewer's)."""

    transitions: list[LiveTransition]
    through: int


class CannotResume(Exception):
    """A Last-Event-ID the stream cannot resume from: `too_old` or `unknown`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(eq=False)
class LiveStream:
    """One caller's transitions, in order; None at the end of a stream that fell behind."""

    viewer: Viewer
    queue: asyncio.Queue[LiveTransition | None] = field(default_factory=lambda: asyncio.Queue(STREAM_BACKLOG))


class AlertFeed:
    def __init__(self, ingress: Ingress) -> None:
        self._ingress = ingress
        self._listening: set[str] = set()
        self._subscribing: dict[str, asyncio.Lock] = {}
        self._commands: dict[tuple[str, str], asyncio.Future[LiveTransition | CommandRefused]] = {}
        self._streams: dict[str, set[LiveStream]] = {}

    async def listen(self, tenant: str) -> None:
        """The tenant's subscription is in place at the server on return."""
        if tenant in self._listening:
            return
        async with self._subscribing.setdefault(tenant, asyncio.Lock()):
            if tenant not in self._listening:
                await self._ingress.follow(subjects.outbound(tenant, "alert", "*"), self._on_event)
                await self._ingress.listen(subjects.outbound(tenant, "alert-command", "rejected"), self._on_event)
                self._listening.add(tenant)

    def expect(self, tenant: str, command_id: str) -> asyncio.Future[LiveTransition | CommandRefused]:
        future: asyncio.Future[LiveTransition | CommandRefused] = asyncio.get_running_loop().create_future()
        self._commands[(tenant, command_id)] = future
        return future

    def forget(self, tenant: str, command_id: str) -> None:
        self._commands.pop((tenant, command_id), None)

    async def open(self, viewer: Viewer) -> LiveStream:
        """A stream of the viewer's transitions from now on; close it when the caller goes."""
        await self.listen(viewer.tenant)
        stream = LiveStream(viewer)
        self._streams.setdefault(viewer.tenant, set()).add(stream)
        return stream

    async def missed(self, viewer: Viewer, last_event_id: str) -> Missed:
        """The viewer's transitions stored after `last_event_id` (a stream sequence this feed gave).
        Raises CannotResume when it is not one, or when the stream cannot give all that came since;
        BrokerUnavailable when the broker cannot be read."""
        if not last_event_id.isdigit() or len(last_event_id) > 19:
            raise CannotResume("unknown")
        try:
            replayed = await self._ingress.replay(subjects.outbound(viewer.tenant, "alert", "*"), int(last_event_id),
                                                  limit=RESUME_LIMIT)
        except NotReplayable as refused:
            raise CannotResume(refused.reason) from None
        found = [self._read(viewer.tenant, m.subject, m.body, m.sequence) for m in replayed.messages]
        return Missed([t for t in found if isinstance(t, LiveTransition)
                       and viewer.sees(t.transition.alert.clinician_id)], replayed.through)

    def close(self, stream: LiveStream) -> None:
        self._streams.get(stream.viewer.tenant, set()).discard(stream)

    @property
    def open_streams(self) -> int:
        return sum(len(s) for s in self._streams.values())

    def _read(self, tenant: str, subject: str, body: bytes,
              sequence: int | None) -> LiveTransition | tuple[str, CommandRefused] | None:
        """An event of `tenant` (the subject's, and the envelope's and the alert's too), or None."""
        try:
            envelope = CloudEvent.model_validate_json(body)
            if envelope.tenant != tenant:
                return None
            if subject.endswith(".alert-command.rejected"):
                return str(envelope.data.get("command_id")), CommandRefused(str(envelope.data["reason"]))
            live = LiveTransition(envelope.id, subject.rsplit(".", 1)[-1],
                                  AlertTransition.model_validate(envelope.data), envelope.subject, sequence)
        except (ValidationError, KeyError, ValueError):
            log.warning("an alert event could not be read", extra={"subject": subject})
            return None
        return live if live.transition.alert.tenant == tenant else None

    def _on_event(self, subject: str, body: bytes, sequence: int | None = None) -> None:
        tenant = subjects.tenant_of(subject)
        if tenant is None:
            return
        live = self._read(tenant, subject, body, sequence)
        if isinstance(live, tuple):
            self._answer(tenant, *live)
            return
        if live is None:
            return
        if live.cause is not None:
            self._answer(tenant, live.cause, live)
        for stream in list(self._streams.get(tenant, ())):
            if not stream.viewer.sees(live.transition.alert.clinician_id):
                continue
            try:
                stream.queue.put_nowait(live)
            except asyncio.QueueFull:
                self._streams[tenant].discard(stream)
                stream.queue.get_nowait()
                stream.queue.put_nowait(None)

    def _answer(self, tenant: str, command_id: str, outcome: LiveTransition | CommandRefused) -> None:
        future = self._commands.get((tenant, command_id))
        if future is not None and not future.done():
            future.set_result(outcome)


def acting_as(principal: Principal) -> str:
    """Who a command says did it: the clinician id, else the token's subject where it is a plain id,
    else a digest of it (a subject may be an e-mail address; the audit trail keeps the subject)."""
    if principal.clinician:
        return principal.clinician
    if ID_PATTERN.fullmatch(principal.subject):
        return principal.subject
    return "sub-" + hashlib.sha256(principal.subject.encode()).hexdigest()[:32]


class AlertCommander:
    def __init__(self, ingress: Ingress, feed: AlertFeed, *, wait_seconds: float) -> None:
        self._ingress = ingress
        self._feed = feed
        self.wait_seconds = wait_seconds

    async def send(self, principal: Principal, alert_id: str, action: Literal["acknowledge", "resolve"],
                   reason: str | None, *, command_id: Callable[[], str] | None = None,
                   ) -> LiveTransition | CommandRefused | None:
        """What the alerts service did, or None when it did not answer within the wait (the command is
        stored by the broker and will be carried out). Raises BrokerUnavailable when nothing was sent."""
        tenant = principal.tenant
        await self._feed.listen(tenant)
        command = AlertCommand(command_id=(command_id or _new_command_id)(), alert_id=alert_id, action=action,
                               by=acting_as(principal), reason=reason)
        answer = self._feed.expect(tenant, command.command_id)
        try:
            await self._ingress.publish(subjects.alert_commands_in(tenant),
                                        json.dumps(command.model_dump(mode="json")).encode(),
                                        message_id=command.command_id)
            return await asyncio.wait_for(asyncio.shield(answer), self.wait_seconds)
        except TimeoutError:
            return None
        finally:
            self._feed.forget(tenant, command.command_id)


def _new_command_id() -> str:
    return f"{COMMAND_PREFIX}{uuid.uuid4().hex}"


def shown(live: LiveTransition) -> AlertShown:
    return AlertShown.of_transition(live.transition)
