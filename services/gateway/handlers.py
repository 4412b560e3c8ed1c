"""The gateway's projection: every `submission.accepted` / `submission.rejected` of every tenant,
kept as the answer to the inbound message it names, so a resend (same Idempotency-Key, or the same
body) is answered as the first time was, and a request that gave up waiting (202) can be resent for
its answer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from rapport.services.gateway.answers import ACCEPTED, REJECTED, Answer
from rapport.services.gateway.repository import save_answers
from rapport.shared.messaging.consumer import Inbound
from rapport.shared.messaging.retry import PoisonMessage
from rapport.shared.unit_of_work import SessionUnitOfWork

SERVICE = "gateway"


@dataclass
class KeepAnswers:
    async def __call__(self, uow: SessionUnitOfWork, messages: Sequence[Inbound]) -> None:
        answers = []
        for message in messages:
            try:
                event = json.loads(message.body)
                kind, data = event["type"], event["data"]
                message.require_tenant(event["tenant"])
                if kind not in (ACCEPTED, REJECTED):
                    continue
                answers.append((message.tenant, str(data["inbound_message_id"]), Answer.from_event(kind, data)))
            except (ValueError, KeyError, TypeError) as error:
                raise PoisonMessage(f"not a submission answer ({type(error).__name__})") from None
        await save_answers(uow.session, answers, uow.now)
