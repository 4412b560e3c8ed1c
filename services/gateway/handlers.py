"""The gateway's projection: ingest's answers (`submission.accepted` / `submission.rejected`) to the
messages the gateway published (the ids it derived), each kept as the answer to its message, so a
resend (same Idempotency-Key, or the same body) is answered as the first time was, and a request that
gave up waiting (202) can be resent for its answer. Answers to what was published straight to the
broker are not kept: they would only add a write per submission."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from rapport.services.gateway.answers import ACCEPTED, REJECTED, Answer
from rapport.services.gateway.intake import GATEWAY_MESSAGE_PREFIX
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
                if not str(data["inbound_message_id"]).startswith(GATEWAY_MESSAGE_PREFIX):
                    continue  # published straight to the broker: not the gateway's to answer
                answers.append((message.tenant, str(data["inbound_message_id"]), Answer.from_event(kind, data)))
            except (ValueError, KeyError, TypeError) as error:
                raise PoisonMessage(f"not a submission answer ({type(error).__name__})") from None
        await save_answers(uow.session, answers, uow.now)
