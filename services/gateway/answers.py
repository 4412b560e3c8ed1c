"""Ingest's answers as the gateway keeps and waits for them.

An `Answer` is what the HTTP caller is told about one part of a message (a Bundle has one part per
answered entry): accepted with the stored record's id (a submission, an appointment's state, or an
episode's ending: `record`), revision and warnings, or rejected with every problem. It holds ids,
codes and the problems' own words, never the submitted values.

`AnswerWaiter` holds the requests waiting for answers, submissions' and attendance's alike. It listens
to a tenant's `<entity>.accepted` / `<entity>.rejected` (entity `submission` or `attendance`) from the
first request for that tenant and entity on (subscriptions kept), so the subscription is in place
before anything is published, and hands each answer to the requests waiting for its
`inbound_message_id`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rapport.shared.contracts.problems import Problem
from rapport.shared.messaging import subjects
from rapport.shared.messaging.ingress import Ingress

log = logging.getLogger("rapport.gateway")

ACCEPTED = "rapport.submission.accepted.v1"
REJECTED = "rapport.submission.rejected.v1"
ATTENDANCE_ACCEPTED = "rapport.attendance.accepted.v1"
ATTENDANCE_REJECTED = "rapport.attendance.rejected.v1"
ANSWER_TYPES = frozenset({ACCEPTED, REJECTED, ATTENDANCE_ACCEPTED, ATTENDANCE_REJECTED})
# what an accepted part was stored as; a rejected attendance part is an "appointment" (its id, if read)
Record = Literal["submission", "appointment", "ending"]


@dataclass(frozen=True)
class Answer:
    outcome: Literal["accepted", "rejected"]
    part: int
    parts: int
    submission_id: str | None  # the stored record's id: the submission's, the appointment's, or the
    # episode's whose ending it is
    source_format: str | None
    problems: tuple[Problem, ...]  # the warnings of an accepted part, the problems of a rejected one
    revision: int | None = None
    disposition: str | None = None
    instrument: str | None = None
    record: Record = "submission"

    @classmethod
    def from_event(cls, kind: str, data: Mapping[str, Any]) -> Answer:
        part, parts = int(data.get("inbound_part", 1)), int(data.get("inbound_parts", 1))
        if kind == ACCEPTED:
            submission = data["submission"]
            return cls(outcome="accepted", part=part, parts=parts, submission_id=submission["submission_id"],
                       source_format=submission.get("source_format"),
                       problems=tuple(Problem.model_validate(w) for w in submission.get("warnings", [])),
                       revision=int(data["revision"]), disposition=data["disposition"],
                       instrument=submission.get("instrument"))
        if kind == REJECTED:
            return cls(outcome="rejected", part=part, parts=parts, submission_id=data.get("submission_id"),
                       source_format=data.get("source_format"),
                       problems=tuple(Problem.model_validate(p) for p in data["problems"]))
        if kind == ATTENDANCE_ACCEPTED:
            appointment = data.get("attendance")
            stored = appointment or data["ending"]
            return cls(outcome="accepted", part=part, parts=parts,
                       submission_id=stored["appointment_id"] if appointment else stored["episode_id"],
                       source_format=stored.get("source_format"),
                       problems=tuple(Problem.model_validate(w) for w in stored.get("warnings", [])),
                       revision=int(data["revision"]), disposition=data["disposition"],
                       record="appointment" if appointment else "ending")
        if kind == ATTENDANCE_REJECTED:
            return cls(outcome="rejected", part=part, parts=parts, submission_id=data.get("appointment_id"),
                       source_format=data.get("source_format"),
                       problems=tuple(Problem.model_validate(p) for p in data["problems"]), record="appointment")
        raise ValueError(f"not an answer: {kind}")

    def stored(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "part": self.part, "parts": self.parts, "submission_id": self.submission_id,
                "source_format": self.source_format, "revision": self.revision, "disposition": self.disposition,
                "instrument": self.instrument, "record": self.record,
                "problems": [p.model_dump() for p in self.problems]}

    @classmethod
    def from_stored(cls, row: Mapping[str, Any]) -> Answer:
        return cls(**{**row, "problems": tuple(Problem.model_validate(p) for p in row["problems"])})


def complete(answers: Mapping[int, Answer]) -> list[Answer] | None:
    """Every part's answer in order, or None while some part has none yet."""
    if not answers:
        return None
    parts = next(iter(answers.values())).parts
    return [answers[n] for n in range(1, parts + 1)] if all(n in answers for n in range(1, parts + 1)) else None


@dataclass(eq=False)
class Pending:
    tenant: str
    message_id: str
    answers: dict[int, Answer] = field(default_factory=dict)
    _woken: asyncio.Event = field(default_factory=asyncio.Event)
    _look_up_due: bool = False

    @property
    def answered(self) -> bool:
        return complete(self.answers) is not None

    def add(self, answer: Answer) -> None:
        self.answers[answer.part] = answer
        if self.answered:
            self._woken.set()

    def look_up_now(self) -> None:
        """The message turns out to have been sent before (a resend): its answers may be stored
        already and will not come live again."""
        self._look_up_due = True
        self._woken.set()

    async def wait(self, seconds: float, *, look_up: Callable[[], Awaitable[list[Answer] | None]],
                   look_up_after: float = 0.5) -> list[Answer] | None:
        """The answers as they arrive, or from `look_up` (the stored answers: for a message answered
        before this request, such as a resend, whose answer will not come again), within `seconds`.
        Looked up at once when `look_up_now` is called, else after `look_up_after`; then at
        doubling intervals: an answer usually comes live first, and under load a look-up every few
        hundred milliseconds per waiting request was what the database spent its time on."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        interval = look_up_after
        while (remaining := deadline - loop.time()) > 0:
            try:
                await asyncio.wait_for(self._woken.wait(), min(remaining, interval))
            except TimeoutError:
                interval = min(interval * 2, 4.0)
            else:
                if (answers := complete(self.answers)) is not None:
                    return answers
                self._woken.clear()
                if not self._look_up_due:
                    continue
                self._look_up_due = False
                interval = 0.5  # a resend whose first request may still be waiting for its answer
            found = await look_up()
            if found is not None:
                return found
        return complete(self.answers)


class AnswerWaiter:
    def __init__(self, ingress: Ingress) -> None:
        self._ingress = ingress
        self._waiting: dict[tuple[str, str], list[Pending]] = {}
        self._listening: set[tuple[str, str]] = set()
        self._subscribing: dict[tuple[str, str], asyncio.Lock] = {}

    async def expect(self, tenant: str, message_id: str, entity: str = "submission") -> Pending:
        """Register a wait for `message_id`'s answers (ingest answers on `<entity>.accepted|rejected`,
        entity `submission` or `attendance`); the subscription is in place on return."""
        listening = (tenant, entity)
        if listening not in self._listening:
            async with self._subscribing.setdefault(listening, asyncio.Lock()):
                if listening not in self._listening:
                    for verb in ("accepted", "rejected"):
                        await self._ingress.listen(subjects.outbound(tenant, entity, verb), self._on_answer)
                    self._listening.add(listening)
        pending = Pending(tenant, message_id)
        self._waiting.setdefault((tenant, message_id), []).append(pending)
        return pending

    def release(self, pending: Pending) -> None:
        key = (pending.tenant, pending.message_id)
        waiting = self._waiting.get(key, [])
        if pending in waiting:
            waiting.remove(pending)
        if not waiting:
            self._waiting.pop(key, None)

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._waiting.values())

    def _on_answer(self, subject: str, body: bytes) -> None:
        tenant = subjects.tenant_of(subject)
        if tenant is None or not self._waiting:
            return
        try:
            event = json.loads(body)
            data = event["data"]
            waiting = self._waiting.get((tenant, data["inbound_message_id"]))
            if not waiting or event.get("tenant") != tenant:
                return
            answer = Answer.from_event(event["type"], data)
        except (ValueError, KeyError, TypeError):
            log.warning("an answer event could not be read", extra={"subject": subject})
            return
        for pending in waiting:
            pending.add(answer)
