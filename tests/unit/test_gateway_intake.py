"""The gateway's intake with in-memory stand-ins for its two ports (the broker side and the stored
messages): a new message is answered live with nothing read from the database; a resend, which
ingest's inbox will not answer again, is answered from the stored answers as soon as its record's
insert says it was sent before, not after the late look-up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from rapport.services.gateway import intake as intake_module
from rapport.services.gateway.answers import Answer, AnswerWaiter
from rapport.services.gateway.intake import Intake, message_id_for
from rapport.services.gateway.repository import Seen, Status

STORED = [Answer(outcome="accepted", part=1, parts=1, submission_id="sub-1", source_format="native", problems=(),
                 revision=1, disposition="new", instrument="phq9")]


@dataclass
class Broker:
    """Takes every publish; answers it as ingest would when `answers_live`, else says nothing (a resend)."""

    answers_live: bool
    listeners: dict[str, Callable[[str, bytes], None]] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)

    async def listen(self, subject: str, on_message: Callable[[str, bytes], None]) -> None:
        self.listeners[subject] = on_message

    async def publish(self, subject: str, body: bytes, *, message_id: str) -> bool:
        self.published.append(message_id)
        if self.answers_live:
            tenant = subject.split(".")[1]
            answer = f"rapport.{tenant}.submission.accepted"
            event = {"type": "rapport.submission.accepted.v1", "tenant": tenant, "data": {
                "inbound_message_id": message_id, "revision": 1, "disposition": "new",
                "submission": {"submission_id": "sub-1", "source_format": "native", "instrument": "phq9"}}}
            asyncio.get_running_loop().call_soon(self.listeners[answer], answer, json.dumps(event).encode())
        return False


@dataclass
class Messages:
    recorded_before: bool
    reads: list[str] = field(default_factory=list)

    async def complete(self, tenant: str, message_id: str) -> list[Answer] | None:
        self.reads.append("complete")
        return STORED

    async def seen(self, tenant: str, message_id: str, body_digest: str) -> Seen:
        self.reads.append("seen")
        return Seen(recorded=self.recorded_before, answers=STORED if self.recorded_before else None)

    async def record(self, tenant: str, message_id: str, *, body_digest: str, form: str, now: datetime) -> bool:
        return not self.recorded_before

    async def status(self, tenant: str, message_id: str) -> Status:
        raise AssertionError("not polled here")


def intake(broker: Broker, messages: Messages) -> Intake:
    return Intake(broker, AnswerWaiter(broker), messages, wait_seconds=60)  # type: ignore[arg-type]


async def test_a_new_message_is_answered_live_with_nothing_read_from_the_database() -> None:
    broker, messages = Broker(answers_live=True), Messages(recorded_before=False)
    body = b'{"instrument": "phq9"}'
    received = await asyncio.wait_for(
        intake(broker, messages).submit("acme", body, message_id_for("acme", body, None), "native"), 5)
    assert received.answers is not None and received.answers[0].submission_id == "sub-1"
    assert messages.reads == []


async def test_a_resend_is_answered_from_the_stored_answers_once_its_record_says_it_was_sent_before(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake_module, "LATE_LOOK_UP_SECONDS", 3600.0)  # only the record's word can prompt a look-up
    broker, messages = Broker(answers_live=False), Messages(recorded_before=True)
    body = b'{"instrument": "phq9"}'
    received = await asyncio.wait_for(
        intake(broker, messages).submit("acme", body, message_id_for("acme", body, None), "native"), 30)
    assert received.answers == STORED
    assert messages.reads == ["complete"] and len(broker.published) == 1
