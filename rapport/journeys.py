"""Follows submissions through the pipeline by listening to a tenant's outbound events.

A journey starts when a message is published to rapport.<tenant>.in.submissions and ends when every
answer it gets (accepted or rejected; a Bundle gets several) has reached its last event:
rejected, accepted-unchanged, or evaluation.completed from the alerts service."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from rapport.shared.messaging import subjects
from rapport.shared.messaging.broker import connect_client
from rapport.shared.messaging.ingress import Ingress
from rapport.shared.messaging.resend import publish_until_stored
from rapport.shared.settings import Settings


@dataclass
class Journey:
    message_id: str
    published: float
    parts: int | None = None
    answers: list[dict[str, Any]] = field(default_factory=list)
    waiting_for: set[tuple[str, int]] = field(default_factory=set)  # (submission id, revision)
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    answered: float | None = None  # when the last part's answer (accepted or rejected) arrived
    scored: float | None = None  # when its first score.computed arrived
    finished: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def _check(self) -> None:
        if self.parts is not None and len(self.answers) >= self.parts and not self.waiting_for:
            self.finished = time.perf_counter()
            self.done.set()

    @property
    def latency(self) -> float | None:
        return None if self.finished is None else self.finished - self.published

    @property
    def answer_latency(self) -> float | None:
        """From the publish to ingest's answer: what an HTTP caller waits for (its 201)."""
        return None if self.answered is None else self.answered - self.published


class Journeys:
    def __init__(self, client: Client, tenant: str) -> None:
        self.client = client
        self.tenant = tenant
        self._ingress = Ingress(lambda: client, timeout=5.0)
        self.by_message: dict[str, Journey] = {}
        self.by_submission: dict[str, Journey] = {}
        self.alert_events: list[dict[str, Any]] = []
        self.notifications: list[dict[str, Any]] = []
        self.command_rejections: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()

    @classmethod
    async def connect(cls, url: str, tenant: str, settings: Settings | None = None) -> Journeys:
        # reconnects for as long as the caller waits: a failover of the node it talks to is not an end;
        # signs in as the services do (RAPPORT_BROKER_USER, _CREDS, _TLS_CA, ...)
        client = await connect_client(settings or Settings(), url, name="rapport-client", max_reconnect_attempts=-1,
                                      reconnect_time_wait=0.5)
        journeys = cls(client, tenant)
        await client.subscribe(f"{subjects.PREFIX}.{tenant}.>", cb=journeys._on_event, pending_msgs_limit=10_000_000,
                               pending_bytes_limit=2_000_000_000)
        await client.flush()
        return journeys

    async def close(self) -> None:
        if self.client.is_connected:
            await self.client.drain()
        else:  # reconnecting: nothing in flight to drain
            await self.client.close()

    async def submit(self, body: bytes, message_id: str | None = None, *, within: float = 30.0) -> Journey:
        """Publish a submission, sent again with the same message id until the stream takes it or
        `within` seconds pass (then StoreUnknown)."""
        message_id = message_id or str(uuid.uuid4())
        journey = Journey(message_id=message_id, published=time.perf_counter())
        self.by_message[message_id] = journey
        await publish_until_stored(self._ingress, subjects.submissions_in(self.tenant), body, message_id=message_id,
                                   within=within)
        return journey

    async def wait_until(self, predicate: Callable[[], bool], seconds: float = 30) -> None:
        """Wait for the events that make `predicate` true (checked after every event)."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), seconds)

    async def _on_event(self, msg: Msg) -> None:
        self._record(msg)
        async with self._changed:
            self._changed.notify_all()

    def _record(self, msg: Msg) -> None:
        if ".in." in msg.subject:
            return
        try:
            event = json.loads(msg.data)
            kind, data = event["type"], event["data"]
        except (ValueError, KeyError, TypeError):
            return
        if msg.subject.split(".")[2] == "notify":
            self.notifications.append(event)
        elif kind.startswith("rapport.submission."):
            self._on_answer(kind, data)
        elif kind == "rapport.score.computed.v1":
            journey = self.by_submission.get(data["submission_id"])
            if journey:
                journey.scores[data["submission_id"]] = data
                journey.scored = journey.scored or time.perf_counter()
        elif kind == "rapport.alert-command.rejected.v1":
            self.command_rejections.append(event)
        elif kind.startswith("rapport.alert."):
            self.alert_events.append(event)
            journey = self.by_submission.get(event.get("subject") or "")
            if journey:
                journey.alerts.append(event)
        elif kind == "rapport.evaluation.completed.v1":
            journey = self.by_submission.get(data["submission_id"])
            if journey:
                journey.evaluations[data["submission_id"]] = data
                journey.waiting_for.discard((data["submission_id"], data["revision"]))
                journey._check()

    def _on_answer(self, kind: str, data: dict[str, Any]) -> None:
        journey = self.by_message.get(data.get("inbound_message_id", ""))
        if journey is None:
            return
        journey.parts = parts = int(data.get("inbound_parts", 1))
        journey.answers.append({"kind": kind, **data})
        if journey.answered is None and len(journey.answers) >= parts:
            journey.answered = time.perf_counter()
        if kind == "rapport.submission.accepted.v1" and data["disposition"] != "unchanged":
            submission_id = data["submission"]["submission_id"]
            self.by_submission[submission_id] = journey
            journey.waiting_for.add((submission_id, data["revision"]))
        journey._check()
