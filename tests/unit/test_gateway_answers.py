"""The gateway's pure parts: FHIRPath and OperationOutcome from Rapport's problems, message ids,
the body limit, tokens and roles, the CapabilityStatement, and the waiter's hand-off of answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rapport.services.gateway import fhir
from rapport.services.gateway.answers import ACCEPTED, ATTENDANCE_REJECTED, Answer, AnswerWaiter
from rapport.services.gateway.handlers import answer_to_another
from rapport.services.gateway.http import PERMISSIONS, may
from rapport.services.gateway.intake import body_limit, message_id_for
from rapport.services.gateway.tokens import (
    InvalidToken,
    Principal,
    SigningKeyVerifier,
    create_signing_key,
    load_signing_key,
    mint,
    parse_ttl,
    principal_from,
)
from rapport.shared.contracts.problems import Problem
from rapport.shared.messaging.consumer import HEADER_ROOM, Inbound

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("resource", "field", "path"), [
    ("QuestionnaireResponse", "item[2].answer[0].valueCoding",
     "QuestionnaireResponse.item[2].answer[0].value.ofType(Coding)"),
    ("QuestionnaireResponse", "item[9].linkId", "QuestionnaireResponse.item[9].linkId"),
    ("QuestionnaireResponse", "authored", "QuestionnaireResponse.authored"),
    ("QuestionnaireResponse", "subject.reference", "QuestionnaireResponse.subject.reference"),
    ("Observation", "valueQuantity.value", "Observation.value.ofType(Quantity).value"),
    ("Observation", "effectiveDateTime", "Observation.effective.ofType(dateTime)"),  # a primitive type: lower case
    ("Bundle", "entry[1].resource.status", "Bundle.entry[1].resource.status"),
    ("QuestionnaireResponse", "responses", None),  # Rapport's word for the items it read, not an element
    ("Observation", "total", None),
    ("QuestionnaireResponse", "", None),
    ("Patient", "id", None),
])
def test_a_problem_names_its_element_as_fhirpath_where_there_is_one(resource: str, field: str,
                                                                    path: str | None) -> None:
    assert fhir.fhirpath(resource, field) == path


def test_a_rejection_lists_every_problem_with_severity_code_expression_and_diagnostics() -> None:
    answer = Answer(outcome="rejected", part=1, parts=1, submission_id="qr-1", source_format=None,
                    problems=(Problem(field="item[0].linkId", code="unmapped_link_id", message="linkId is not an item",
                                      expected="a LOINC item code"),
                              Problem(field="responses", code="missing_items", message="item 9 has no answer")))
    outcome = fhir.outcome_of(answer, "QuestionnaireResponse")
    assert outcome == {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "code-invalid",
         "details": {"coding": [{"system": fhir.PROBLEM_CODES, "code": "unmapped_link_id"}]},
         "diagnostics": "linkId is not an item (expected a LOINC item code)",
         "expression": ["QuestionnaireResponse.item[0].linkId"]},
        {"severity": "error", "code": "required",
         "details": {"coding": [{"system": fhir.PROBLEM_CODES, "code": "missing_items"}]},
         "diagnostics": "responses: item 9 has no answer"},
    ]}


def test_an_acceptance_says_what_was_stored_then_its_warnings() -> None:
    answer = Answer(outcome="accepted", part=1, parts=1, submission_id="qr-1", source_format=None, revision=2,
                    disposition="amended", instrument="phq9",
                    problems=(Problem(field="item[9].answer[0]", code="total_mismatch",
                                      message="stated 12, scored 5"),))
    [stored, warning] = fhir.outcome_of(answer, "QuestionnaireResponse")["issue"]
    assert stored["diagnostics"] == "accepted as submission qr-1, revision 2 (amended)"
    assert (warning["severity"], warning["code"]) == ("warning", "business-rule")


def test_message_ids_are_scoped_by_tenant_and_fixed_in_length() -> None:
    assert message_id_for("acme", b"{}", "k-1") == message_id_for("acme", b"{}", "k-1")
    assert message_id_for("acme", b"{}", "k-1") != message_id_for("beta", b"{}", "k-1")
    assert message_id_for("acme", b"{}", None) != message_id_for("beta", b"{}", None)
    assert message_id_for("acme", b"{}", "k-1") == message_id_for("acme", b'{"other": 1}', "k-1")
    assert len(message_id_for("a" * 64, b"x" * 10_000, "k" * 255)) <= 50


def test_the_body_limit_always_leaves_room_for_headers_under_the_brokers_max_payload() -> None:
    assert body_limit(1024 * 1024, 2 * 1024 * 1024) == 1024 * 1024
    assert body_limit(1024 * 1024, 1024 * 1024) == 1024 * 1024 - HEADER_ROOM
    assert body_limit(4096, 1024 * 1024) == 4096


def test_only_integration_may_submit_in_this_slice() -> None:
    assert [role for role in PERMISSIONS if may(Principal("acme", role, "s"), "submit")] == ["integration"]
    assert not may(Principal("acme", None, "s"), "submit")


@pytest.fixture
def key(tmp_path: Path) -> Ed25519PrivateKey:
    path = tmp_path / "key.pem"
    assert create_signing_key(path)
    assert not create_signing_key(path), "an existing key is never replaced"
    assert path.stat().st_mode & 0o777 == 0o600
    return load_signing_key(path)


async def test_a_minted_token_verifies_to_its_tenant_role_and_clinician(key: Ed25519PrivateKey) -> None:
    verifier = SigningKeyVerifier(key.public_key(), audience="rapport")
    now = datetime.now(UTC)
    bearer = mint(key, tenant="acme", role="clinician", clinician="clinician-03", audience="rapport", now=now,
                  ttl=timedelta(hours=1))
    assert await verifier.verify(bearer) == Principal("acme", "clinician", "clinician-03", "clinician-03")
    expired = mint(key, tenant="acme", role="integration", audience="rapport", now=now - timedelta(hours=2),
                   ttl=timedelta(hours=1))
    elsewhere = mint(key, tenant="acme", role="integration", audience="billing", now=now, ttl=timedelta(hours=1))
    for untrusted in (expired, elsewhere, bearer + "x", "a.b.c"):
        with pytest.raises(InvalidToken):
            await verifier.verify(untrusted)


@pytest.mark.parametrize(("call", "words"), [
    (lambda k: mint(k, tenant="Acme", role="integration", audience="a", now=NOW, ttl=timedelta(hours=1)), "tenant"),
    (lambda k: mint(k, tenant="acme", role="root", audience="a", now=NOW, ttl=timedelta(hours=1)), "role"),
    (lambda k: mint(k, tenant="acme", role="clinician", audience="a", now=NOW, ttl=timedelta(hours=1)), "--clinician"),
    (lambda k: mint(k, tenant="acme", role="integration", audience="a", now=NOW, ttl=timedelta(days=31)), "ttl"),
    (lambda k: mint(k, tenant="acme", role="lead", clinician="a.b", audience="a", now=NOW, ttl=timedelta(hours=1)),
     "clinician"),
])
def test_tokens_are_minted_only_for_valid_claims(key: Ed25519PrivateKey, call: Callable[[Ed25519PrivateKey], str],
                                                 words: str) -> None:
    with pytest.raises(ValueError, match=words):
        call(key)


def test_claims_without_a_valid_tenant_are_refused_and_an_unknown_role_is_no_role() -> None:
    for claims in ({}, {"tenant": "ACME"}, {"tenant": ["acme"]}):
        with pytest.raises(InvalidToken):
            principal_from(claims)
    assert principal_from({"tenant": "acme", "role": "superuser"}).role is None
    assert principal_from({"tenant": "acme", "role": ["offline_access", "lead"]}).role == "lead"


def test_ttls() -> None:
    assert parse_ttl("90s") == timedelta(seconds=90)
    assert parse_ttl("7d") == timedelta(days=7)
    for bad in ("", "1", "h", "1.5h", "-1h"):
        with pytest.raises(ValueError):
            parse_ttl(bad)


def test_the_capability_statement_says_what_is_supported_and_that_transactions_are_refused() -> None:
    statement = fhir.capability_statement(now=NOW, version="0.1.0", max_body_bytes=1024, wait_seconds=5)
    [rest] = statement["rest"]
    assert statement["fhirVersion"] == "4.0.1" and statement["kind"] == "instance"
    assert {r["type"]: [i["code"] for i in r["interaction"]] for r in rest["resource"]} == {
        "QuestionnaireResponse": ["create"], "Observation": ["create"], "Appointment": ["create"],
        "Encounter": ["create"], "EpisodeOfCare": ["create"]}
    assert [i["code"] for i in rest["interaction"]] == ["batch"]
    assert "transaction Bundle is refused" in rest["interaction"][0]["documentation"]
    assert "send the same entries as a batch" in rest["interaction"][0]["documentation"]


class Listening:
    """An in-memory stand-in for the broker side of the waiter: records subscriptions, delivers by hand."""

    def __init__(self) -> None:
        self.callbacks: dict[str, Callable[[str, bytes], None]] = {}

    async def listen(self, subject: str, on_message: Callable[[str, bytes], None]) -> None:
        self.callbacks[subject] = on_message

    def deliver(self, subject: str, event: dict[str, object]) -> None:
        self.callbacks[subject](subject, json.dumps(event).encode())


def answer_event(tenant: str, message_id: str, part: int, parts: int) -> dict[str, object]:
    return {"type": "rapport.submission.rejected.v1", "tenant": tenant, "data": {
        "inbound_message_id": message_id, "inbound_part": part, "inbound_parts": parts, "submission_id": None,
        "problems": [{"field": "entry", "code": "empty_bundle", "message": "no entries"}]}}


async def test_the_waiter_hands_each_answer_to_its_message_and_tenant_only() -> None:
    broker = Listening()
    waiter = AnswerWaiter(broker)  # type: ignore[arg-type]
    pending = await waiter.expect("acme", "m-1")
    assert set(broker.callbacks) == {"rapport.acme.submission.accepted", "rapport.acme.submission.rejected"}
    rejected = "rapport.acme.submission.rejected"
    broker.deliver(rejected, answer_event("acme", "m-2", 1, 1))  # another message
    broker.deliver(rejected, answer_event("beta", "m-1", 1, 2))  # names another tenant than its subject
    broker.deliver(rejected, answer_event("acme", "m-1", 2, 2))
    assert not pending.answered
    broker.deliver(rejected, answer_event("acme", "m-1", 1, 2))
    assert pending.answered

    async def nothing_stored() -> list[Answer] | None:
        return None

    answers = await pending.wait(1, look_up=nothing_stored)
    assert answers is not None and [a.part for a in answers] == [1, 2]
    waiter.release(pending)
    assert waiter.waiting == 0


async def test_a_wait_finds_the_stored_answer_of_a_message_answered_before() -> None:
    waiter = AnswerWaiter(Listening())  # type: ignore[arg-type]
    pending = await waiter.expect("acme", "m-1")
    stored = [Answer(outcome="accepted", part=1, parts=1, submission_id="s", source_format=None, problems=())]

    async def look_up() -> list[Answer] | None:
        return stored

    assert await pending.wait(2, look_up=look_up, look_up_after=0.01) == stored
    nothing = await waiter.expect("acme", "m-2")

    async def none() -> list[Answer] | None:
        return None

    assert await nothing.wait(0.05, look_up=none, look_up_after=0.01) is None


async def test_a_resend_is_looked_up_as_soon_as_it_is_known_and_a_new_message_only_late() -> None:
    broker = Listening()
    waiter = AnswerWaiter(broker)  # type: ignore[arg-type]
    stored = [Answer(outcome="accepted", part=1, parts=1, submission_id="s", source_format=None, problems=())]
    looked_up: list[str] = []

    def look_up(message_id: str) -> Callable[[], Awaitable[list[Answer] | None]]:
        async def stored_answers() -> list[Answer] | None:
            looked_up.append(message_id)
            return stored
        return stored_answers

    resend = await waiter.expect("acme", "m-1")
    waiting = asyncio.ensure_future(resend.wait(60, look_up=look_up("m-1"), look_up_after=30))
    await asyncio.sleep(0)  # a yield, not a wait: the wait is under way before the message is known to be a resend
    resend.look_up_now()
    assert await asyncio.wait_for(waiting, 5) == stored  # not after the half minute

    new = await waiter.expect("acme", "m-2")
    waiting = asyncio.ensure_future(new.wait(60, look_up=look_up("m-2"), look_up_after=30))
    broker.deliver("rapport.acme.submission.rejected", answer_event("acme", "m-2", 1, 1))
    answers = await asyncio.wait_for(waiting, 5)
    assert answers is not None and answers[0].outcome == "rejected"
    assert looked_up == ["m-1"], "a new message's answer came live, with no look-up"


def test_the_answer_projections_pass_over_answers_to_messages_the_gateway_did_not_publish() -> None:
    def inbound(body: object) -> Inbound:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return Inbound(message_id="m", subject="rapport.acme.submission.accepted", tenant="acme", body=raw,
                       deliveries=1)

    sent_by_broker = {"type": ACCEPTED, "data": {"inbound_message_id": "3f0c-uuid"}}
    sent_over_http = {"type": ACCEPTED, "data": {"inbound_message_id": "http-body:" + "a" * 40}}
    assert answer_to_another(inbound(sent_by_broker))
    assert answer_to_another(inbound({**sent_by_broker, "type": ATTENDANCE_REJECTED}))
    assert not answer_to_another(inbound(sent_over_http))
    assert not answer_to_another(inbound({"type": "rapport.attendance.recorded.v1", "data": {}}))  # not an answer
    assert not answer_to_another(inbound(b"not json"))  # the handler refuses it (poison), with its reason
    assert not answer_to_another(inbound({"type": ACCEPTED}))
