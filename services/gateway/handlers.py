"""The gateway's projections.

Ingest's answers (`submission.accepted` / `submission.rejected`, and attendance's
`attendance.accepted` / `attendance.rejected`) to the
messages the gateway published (the ids it derived), each kept as the answer to its message, so a
resend (same Idempotency-Key, or the same body) is answered as the first time was, and a request that
gave up waiting (202) can be resent for its answer. Answers to what was published straight to the
broker are not kept: they would only add a write per submission.

The alerts, scores and attendance (records.py): every `alert.*` transition, every `score.computed`
and every `attendance.recorded` (the episode's attendance summary), kept as the alert and record API
shows them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from rapport.services.gateway.answers import ANSWER_TYPES, Answer
from rapport.services.gateway.intake import GATEWAY_MESSAGE_PREFIX
from rapport.services.gateway.records import keep_attendance, keep_scores, keep_transitions
from rapport.services.gateway.repository import save_answers
from rapport.shared.contracts.alert import AlertTransition
from rapport.shared.contracts.attendance import AttendanceRecorded
from rapport.shared.contracts.envelope import CloudEvent, event_type
from rapport.shared.contracts.score import ScoreComputed
from rapport.shared.messaging.consumer import Inbound
from rapport.shared.messaging.retry import PoisonMessage
from rapport.shared.unit_of_work import SessionUnitOfWork

SERVICE = "gateway"


KeptAnswer = tuple[str, str, Answer]  # tenant, inbound message id, the answer


def _answer(message: Inbound, event: dict[str, Any]) -> KeptAnswer | None:
    """The answer to keep, or None for an answer to a message the gateway did not publish."""
    try:
        kind, data = event["type"], event["data"]
        message.require_tenant(event["tenant"])
        if not _published_by_gateway(data):
            return None  # published straight to the broker: not the gateway's to answer
        return message.tenant, str(data["inbound_message_id"]), Answer.from_event(kind, data)
    except (ValueError, KeyError, TypeError) as error:
        raise PoisonMessage(f"not an answer ({type(error).__name__})") from None


def _published_by_gateway(answer: dict[str, Any]) -> bool:
    return str(answer["inbound_message_id"]).startswith(GATEWAY_MESSAGE_PREFIX)


def answer_to_another(message: Inbound) -> bool:
    """One of ingest's answers to a message the gateway did not publish (one published straight to
    the broker): nothing of it is kept, so its consumer passes over it without a transaction. What
    cannot be read as an answer is the handler's to refuse."""
    try:
        event = json.loads(message.body)
        return bool(event["type"] in ANSWER_TYPES and not _published_by_gateway(event["data"]))
    except (ValueError, KeyError, TypeError):
        return False


def _event(message: Inbound) -> dict[str, Any]:
    try:
        event = json.loads(message.body)
    except ValueError:
        raise PoisonMessage("not JSON") from None
    if not isinstance(event, dict):
        raise PoisonMessage("not an event")
    return event


@dataclass
class KeepAnswers:
    async def __call__(self, uow: SessionUnitOfWork, messages: Sequence[Inbound]) -> None:
        answers = [kept for m in messages if (event := _event(m)).get("type") in ANSWER_TYPES
                   and (kept := _answer(m, event)) is not None]
        await save_answers(uow.session, answers, uow.now)


ALERT_EVENTS = {event_type("alert", verb) for verb in ("raised", "updated", "resolved")}
SCORE_COMPUTED = event_type("score", "computed")
ATTENDANCE_RECORDED = event_type("attendance", "recorded")


def _read(message: Inbound, types: set[str]) -> CloudEvent:
    try:
        envelope = CloudEvent.model_validate_json(message.body)
    except ValidationError as exc:
        raise PoisonMessage(f"not an event ({exc.error_count()} problems)") from None
    if envelope.type not in types:
        raise PoisonMessage("not an event this projection keeps")
    return envelope


@dataclass
class KeepAlerts:
    async def __call__(self, uow: SessionUnitOfWork, messages: Sequence[Inbound]) -> None:
        transitions = []
        for message in messages:
            envelope = _read(message, ALERT_EVENTS)
            try:
                transition = AlertTransition.model_validate(envelope.data)
            except ValidationError as exc:
                raise PoisonMessage(f"not an alert transition ({exc.error_count()} problems)") from None
            message.require_tenant(envelope.tenant, transition.alert.tenant)
            transitions.append(transition)
        await keep_transitions(uow.session, transitions)


@dataclass
class KeepScores:
    async def __call__(self, uow: SessionUnitOfWork, messages: Sequence[Inbound]) -> None:
        scores = []
        for message in messages:
            envelope = _read(message, {SCORE_COMPUTED})
            try:
                score = ScoreComputed.model_validate(envelope.data)
            except ValidationError as exc:
                raise PoisonMessage(f"not a computed score ({exc.error_count()} problems)") from None
            message.require_tenant(envelope.tenant, score.tenant)
            scores.append(score)
        await keep_scores(uow.session, scores)


@dataclass
class KeepAttendance:
    """`attendance.*`: ingest's answers (kept as KeepAnswers keeps submissions') and the alerts
    service's `attendance.recorded` summaries. One consumer for both: the gateway's consumers share
    one inbox, so no two of them may be given the same event."""

    async def __call__(self, uow: SessionUnitOfWork, messages: Sequence[Inbound]) -> None:
        answers: list[KeptAnswer] = []
        recorded = []
        for message in messages:
            event = _event(message)
            if event.get("type") in ANSWER_TYPES:
                if (kept := _answer(message, event)) is not None:
                    answers.append(kept)
                continue
            envelope = _read(message, {ATTENDANCE_RECORDED})
            try:
                attendance = AttendanceRecorded.model_validate(envelope.data)
            except ValidationError as exc:
                raise PoisonMessage(f"not recorded attendance ({exc.error_count()} problems)") from None
            message.require_tenant(envelope.tenant, attendance.tenant)
            recorded.append(attendance)
        await save_answers(uow.session, answers, uow.now)
        await keep_attendance(uow.session, recorded)
