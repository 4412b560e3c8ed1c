"""A submission's answer polled at the 202's Location, and an Idempotency-Key reused with another
body, over real HTTP with ingest on the real NATS JetStream, on SQLite and PostgreSQL. Synthetic
fixtures only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import nats
import pytest
import pytest_asyncio
from harness import running
from nats.aio.msg import Msg
from test_gateway import (
    client,
    fhir_json,
    fixture,
    gateway_settings,
    serving,
    stored_submissions,
    token,
)

pytestmark = pytest.mark.nats

NATIVE = {"Content-Type": "application/json"}


@pytest_asyncio.fixture
async def inbound(fresh_stream: str) -> AsyncIterator[list[tuple[str, bytes]]]:
    """(subject, body) of every inbound message published while the test runs."""
    seen: list[tuple[str, bytes]] = []
    nc = await nats.connect(fresh_stream)

    async def on_message(msg: Msg) -> None:
        seen.append((msg.subject, msg.data))

    await nc.subscribe("rapport.*.in.>", cb=on_message)
    await nc.flush()
    yield seen
    await nc.drain()


async def poll_until_answered(http: httpx.AsyncClient, location: str, seconds: float = 20) -> httpx.Response:
    """GET the Location as a client would, honouring Retry-After, until it is no longer 202."""
    async with asyncio.timeout(seconds):
        while True:
            response = await http.get(location)
            if response.status_code != 202:
                return response
            await asyncio.sleep(min(0.2, float(response.headers["retry-after"])))


async def test_a_202_names_a_location_that_answers_pending_then_the_answer_the_request_would_have_got(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    native_body = fixture("native", "phq9-complete")
    fhir_body = fixture("fhir", "qr-linkid-q")
    waiting = gateway_settings(database_url, key_file, gateway_answer_wait_seconds=0.3)
    async with serving(waiting, fresh_stream) as base, client(base, token(key_file, tenant)) as http:
        # ingest is not running: the broker has the messages, no answer comes in time
        native = await http.post("/api/v1/submissions", content=native_body,
                                 headers=NATIVE | {"Idempotency-Key": "export-0042"})
        assert native.status_code == 202, native.text
        message_id = native.headers["rapport-message-id"]
        assert native.headers["location"] == f"/api/v1/messages/{message_id}"
        assert native.json()["status"] == "pending"
        fhir = await http.post("/fhir/QuestionnaireResponse", content=fhir_body, headers=fhir_json())
        assert fhir.status_code == 202, fhir.text
        fhir_id = fhir.headers["rapport-message-id"]
        assert fhir.headers["location"] == f"/fhir/_messages/{fhir_id}"

        pending = await http.get(native.headers["location"])
        assert (pending.status_code, pending.json()["status"]) == (202, "pending")
        assert pending.headers["location"] == native.headers["location"] and pending.headers["retry-after"] == "1"
        fhir_pending = await http.get(fhir.headers["location"])
        assert fhir_pending.status_code == 202
        assert fhir_pending.headers["content-type"].startswith("application/fhir+json")
        assert fhir_pending.json()["issue"][0]["details"]["coding"][0]["code"] == "pending"

        # never sent by this tenant: 404, whoever asks and however the id looks
        unknown = message_id[:-4] + ("0000" if not message_id.endswith("0000") else "1111")
        for path in (f"/api/v1/messages/{unknown}", "/api/v1/messages/not-ours", f"/fhir/_messages/{unknown}"):
            missing = await http.get(path)
            assert missing.status_code == 404, path
        async with client(base, token(key_file, f"{tenant}x")) as other_tenant:
            for location in (native.headers["location"], fhir.headers["location"]):
                assert (await other_tenant.get(location)).status_code == 404
        for role, extra in (("clinician", {"clinician": "clinician-03"}), ("lead", {}), ("admin", {})):
            async with client(base, token(key_file, tenant, role=role, **extra)) as person:
                assert (await person.get(native.headers["location"])).status_code == 403, role
        async with client(base) as anonymous:
            assert (await anonymous.get(native.headers["location"])).status_code == 401

    settings = gateway_settings(database_url, key_file)
    async with running(["ingest"], settings, fresh_stream), serving(settings, fresh_stream) as base, \
            client(base, token(key_file, tenant)) as http:
        answered = await poll_until_answered(http, native.headers["location"])
        assert answered.status_code == 200, answered.text
        assert answered.headers["rapport-answer-status"] == "201" and "location" not in answered.headers
        assert answered.json() == {"message_id": message_id, "status": "accepted", "submission_id": "sub-0001",
                                   "instrument": "phq9", "revision": 1, "disposition": "new", "warnings": []}
        resent = await http.post("/api/v1/submissions", content=native_body,
                                 headers=NATIVE | {"Idempotency-Key": "export-0042"})
        assert (resent.status_code, resent.json()) == (201, answered.json())

        fhir_answered = await poll_until_answered(http, fhir.headers["location"])
        assert fhir_answered.status_code == 200, fhir_answered.text
        assert fhir_answered.headers["rapport-answer-status"] == "201"
        assert fhir_answered.headers["etag"] == 'W/"1"'
        fhir_resent = await http.post("/fhir/QuestionnaireResponse", content=fhir_body, headers=fhir_json())
        assert (fhir_resent.status_code, fhir_resent.json()) == (201, fhir_answered.json())
        # the native twin of the same message, in the native shape
        as_native = await http.get(f"/api/v1/messages/{fhir_id}")
        assert as_native.status_code == 200 and as_native.json()["status"] == "accepted"

        # a rejection polled: 200 with every problem, the request's 422 in the header
        rejected = await http.post("/api/v1/submissions", content=fixture("native", "phq9-missing-item9"),
                                   headers=NATIVE)
        assert rejected.status_code == 422
        # (answered live; the poll reads the stored answer, which the projection may keep a moment later)
        polled = await poll_until_answered(http, f"/api/v1/messages/{rejected.headers['rapport-message-id']}")
        assert (polled.status_code, polled.headers["rapport-answer-status"]) == (200, "422")
        assert polled.json() == rejected.json()

        # a batch polled through the FHIR twin: the batch-response
        batch = json.loads(fixture("fhir", "bundle-collection")) | {"type": "batch"}
        bundle = await http.post("/fhir", json=batch, headers=fhir_json())
        assert bundle.status_code == 200, bundle.text
        bundle_polled = await poll_until_answered(http, f"/fhir/_messages/{bundle.headers['rapport-message-id']}")
        assert (bundle_polled.status_code, bundle_polled.json()) == (200, bundle.json())
        assert bundle_polled.headers["rapport-answer-status"] == "200"
    assert await stored_submissions(database_url, tenant) == 3


async def test_an_idempotency_key_sent_again_with_another_body_is_refused_and_nothing_is_published(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path,
    inbound: list[tuple[str, bytes]],
) -> None:
    settings = gateway_settings(database_url, key_file)
    first_body = fixture("native", "phq9-complete")
    other_body = json.dumps(json.loads(first_body) | {"submission_id": "sub-0002"}).encode()
    key = {"Idempotency-Key": "export-0077"}
    async with running(["ingest"], settings, fresh_stream), serving(settings, fresh_stream) as base, \
            client(base, token(key_file, tenant)) as http:
        first = await http.post("/api/v1/submissions", content=first_body, headers=NATIVE | key)
        assert first.status_code == 201, first.text
        again = await http.post("/api/v1/submissions", content=first_body, headers=NATIVE | key)
        assert (again.status_code, again.json()) == (201, first.json())

        reused = await http.post("/api/v1/submissions", content=other_body, headers=NATIVE | key)
        assert reused.status_code == 422, reused.text
        assert reused.json()["status"] == "refused"
        [problem] = reused.json()["problems"]
        assert (problem["code"], problem["field"]) == ("idempotency_key_reused", "Idempotency-Key")
        assert "sub-0002" not in reused.text

        fhir = await http.post("/fhir/QuestionnaireResponse", content=fixture("fhir", "qr-linkid-q"),
                               headers=fhir_json(key))
        assert fhir.status_code == 422, fhir.text
        [issue] = fhir.json()["issue"]
        assert (issue["code"], issue["details"]["coding"][0]["code"]) == ("business-rule", "idempotency_key_reused")

        # the key is the tenant's: another tenant may use the same one for its own body
        async with client(base, token(key_file, f"{tenant}x")) as other_tenant:
            theirs = await other_tenant.post("/api/v1/submissions", content=other_body, headers=NATIVE | key)
            assert theirs.status_code == 201, theirs.text
        # and the first body with the key still gets its answer
        still = await http.post("/api/v1/submissions", content=first_body, headers=NATIVE | key)
        assert (still.status_code, still.json()) == (201, first.json())
    # a resend may be published again (the broker drops it as a duplicate); the other body never is
    ours = [body for subject, body in inbound if subject == f"rapport.{tenant}.in.submissions"]
    assert ours and set(ours) == {first_body}
    assert (f"rapport.{tenant}x.in.submissions", other_body) in inbound
    assert await stored_submissions(database_url, tenant) == 1
