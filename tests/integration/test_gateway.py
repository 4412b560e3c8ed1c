"""The gateway over real HTTP (uvicorn on loopback), with ingest running on the real NATS JetStream,
on SQLite and PostgreSQL: FHIR and native submissions answered 201 / 422 / 202, every FHIR fixture
answered over HTTP as over the broker, resends answered once, and every refusal (401, 403, 413, 415,
400, 503) made before anything is published. Synthetic fixtures only."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import running, serving, settings_for
from nats.aio.msg import Msg
from sqlalchemy import func, select

from rapport.embedded_nats import EmbeddedNats
from rapport.services.gateway import fhir
from rapport.services.gateway.tokens import load_signing_key, mint
from rapport.services.ingest.models import StoredSubmission
from rapport.shared.db.engine import create_engine, session_factory
from rapport.shared.settings import Settings

pytestmark = pytest.mark.nats

FIXTURES = Path(__file__).parents[1] / "fixtures"
NOW = datetime.now(UTC)


def fixture(kind: str, name: str) -> bytes:
    return (FIXTURES / kind / f"{name}.json").read_bytes()



def token(key_file: Path, tenant: str, role: str = "integration", **overrides: Any) -> str:
    options: dict[str, Any] = {"audience": "rapport", "now": NOW, "ttl": timedelta(hours=1), **overrides}
    return mint(load_signing_key(key_file), tenant=tenant, role=role, **options)


def gateway_settings(database_url: str, key_file: Path, **overrides: Any) -> Settings:
    return settings_for(database_url, **{"token_key_file": key_file, "gateway_answer_wait_seconds": 15.0, **overrides})


@asynccontextmanager
async def client(base: str, bearer: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
        yield http


def fhir_json(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"Content-Type": "application/fhir+json", **(extra or {})}


async def stored_submissions(database_url: str, tenant: str) -> int:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            count = select(func.count()).select_from(StoredSubmission).where(StoredSubmission.tenant == tenant)
            return int((await session.execute(count)).scalar_one())
    finally:
        await engine.dispose()


def codes(outcome: dict[str, Any]) -> list[str]:
    return [i["details"]["coding"][0]["code"] for i in outcome["issue"] if "details" in i]


# 201, 422, 202


async def test_a_fhir_response_and_a_native_one_are_accepted_and_an_invalid_one_is_answered_with_every_problem(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    settings = gateway_settings(database_url, key_file)
    async with running(["ingest"], settings, fresh_stream), serving(settings, fresh_stream) as base, \
            client(base, token(key_file, tenant)) as http:
        created = await http.post("/fhir/QuestionnaireResponse", content=fixture("fhir", "qr-linkid-loinc"),
                                  headers=fhir_json())
        assert created.status_code == 201, created.text
        assert created.headers["content-type"].startswith("application/fhir+json")
        assert created.headers["location"] == "/fhir/QuestionnaireResponse/qr-0001/_history/1"
        outcome = created.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["diagnostics"] == "accepted as submission qr-0001, revision 1 (new)"

        warned = await http.post("/fhir/QuestionnaireResponse", content=fixture("fhir", "qr-total-mismatch"),
                                 headers={"Content-Type": "application/json"})
        assert warned.status_code == 201, warned.text
        [warning] = [i for i in warned.json()["issue"] if i["severity"] == "warning"]
        assert warning["code"] == "business-rule" and codes({"issue": [warning]}) == ["total_mismatch"]
        assert warning["expression"] == ["QuestionnaireResponse.item[9].answer[0]"]

        native = await http.post("/api/v1/submissions", content=fixture("native", "phq9-complete"),
                                 headers={"Content-Type": "application/json"})
        assert native.status_code == 201, native.text
        assert native.json() | {"message_id": "-"} == {
            "message_id": "-", "status": "accepted", "submission_id": "sub-0001", "instrument": "phq9",
            "revision": 1, "disposition": "new", "warnings": []}

        rejected = await http.post("/fhir/QuestionnaireResponse", content=fixture("fhir", "qr-linkid-descriptive"),
                                   headers=fhir_json())
        assert rejected.status_code == 422, rejected.text
        issues = rejected.json()["issue"]
        assert {i["severity"] for i in issues} == {"error"}
        assert issues[0]["code"] == "code-invalid"
        assert issues[0]["expression"] == ["QuestionnaireResponse.item[0].linkId"]
        assert all(i["diagnostics"] for i in issues)

        coding = await http.post("/fhir/QuestionnaireResponse", content=fixture("fhir", "qr-answer-unscorable-code"),
                                 headers=fhir_json())
        assert coding.status_code == 422
        assert coding.json()["issue"][0]["expression"] == [
            "QuestionnaireResponse.item[0].answer[0].value.ofType(Coding)"]

        native_rejected = await http.post("/api/v1/submissions", content=fixture("native", "phq9-missing-item9"),
                                          headers={"Content-Type": "application/json"})
        assert native_rejected.status_code == 422
        assert native_rejected.json()["status"] == "rejected"
        assert [p["code"] for p in native_rejected.json()["problems"]] == ["missing_items"]

        observation = await http.post("/fhir/Observation", content=fixture("fhir", "observation-total"),
                                      headers=fhir_json())
        assert observation.status_code == 201, observation.text
        assert observation.headers["location"].startswith("/fhir/Observation/obs%3A")

        batch = json.loads(fixture("fhir", "bundle-collection"))
        batch["type"] = "batch"
        answered = await http.post("/fhir", json=batch, headers=fhir_json())
        assert answered.status_code == 200, answered.text
        body = answered.json()
        assert (body["resourceType"], body["type"]) == ("Bundle", "batch-response")
        assert [e["response"]["status"] for e in body["entry"]] == ["201 Created", "422 Unprocessable Entity"]
        assert body["entry"][1]["response"]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[1].resource.status"]
    assert await stored_submissions(database_url, tenant) == 5


async def test_the_fhir_fixtures_get_the_same_outcome_over_http_as_over_the_broker(
    sqlite_databases: Any, fresh_stream: str, key_file: Path
) -> None:
    """Each fixture goes where its resourceType says (a Bundle to /fhir; an Appointment, Encounter or
    EpisodeOfCare to its own endpoint; anything else to /fhir/QuestionnaireResponse), and over the
    broker to in.attendance when it is attendance (fhir.bundle_channel), else to in.submissions.
    Refused at the door, by design, and checked as such: Bundles of
    types other than batch and collection (then retyped as batch, they match), and CloudEvents
    (HTTP takes the resource; the envelope is the broker's form)."""
    database_url = await sqlite_databases.sqlite()
    settings = gateway_settings(database_url, key_file)
    over_broker, over_http = f"b{uuid.uuid4().hex[:10]}", f"h{uuid.uuid4().hex[:10]}"
    names = sorted(p.stem for p in (FIXTURES / "fhir").glob("*.json"))
    async with running(["ingest"], settings, fresh_stream), serving(settings, fresh_stream) as base, \
            client(base, token(key_file, over_http)) as http, broker_answers(fresh_stream, over_broker) as broker:
        compared = 0
        for name in names:
            body = fixture("fhir", name)
            document = json.loads(body)
            kind = document.get("resourceType")
            inbound = "attendance" if kind in fhir.ATTENDANCE_TYPES or (
                kind == "Bundle" and fhir.bundle_channel(document) == "attendance") else "submissions"
            expected = await broker.submit(body, inbound)
            if kind == "Bundle" and document.get("type") not in ("batch", "collection"):
                refused = await http.post("/fhir", content=body, headers=fhir_json())
                assert refused.status_code == 422, name
                assert "send the same entries as a batch" in refused.text or "batch or collection" in refused.text
                document["type"] = "batch"
                body = json.dumps(document).encode()
                expected = await broker.submit(body, inbound)
            elif "specversion" in document:
                refused = await http.post("/fhir/QuestionnaireResponse", content=body, headers=fhir_json())
                assert refused.status_code == 400, name
                continue
            path = {"Bundle": "/fhir", "Observation": "/fhir/Observation",
                    **{t: f"/fhir/{t}" for t in fhir.ATTENDANCE_TYPES}}.get(kind, "/fhir/QuestionnaireResponse")
            response = await http.post(path, content=body, headers=fhir_json())
            assert http_outcome(response) == expected or (
                response.status_code == 400 and all(outcome == "rejected" for outcome, *_ in expected)
            ), (name, response.status_code, response.text, expected)
            compared += 1
    assert compared >= len(names) - 2


def http_outcome(response: httpx.Response) -> list[tuple[str, str | None, tuple[str, ...] | None]]:
    body = response.json()
    if response.status_code == 200:
        parts = [(e["response"]["status"], e["response"]["outcome"]) for e in body["entry"]]
    else:
        parts = [({201: "201", 422: "422"}.get(response.status_code, str(response.status_code)), body)]
    out = []
    for status, outcome in parts:
        if status.startswith("201"):
            out.append(("accepted", None, None))
        elif status.startswith("422"):
            out.append(("rejected", None, tuple(sorted(codes(outcome)))))
        else:
            out.append((f"status {status}", None, None))
    return out


class BrokerAnswers:
    """Publishes straight to the broker, as clinic systems do, and collects ingest's answers."""

    def __init__(self, client: nats.aio.client.Client, tenant: str) -> None:
        self.client = client
        self.tenant = tenant
        self.answers: dict[str, dict[int, dict[str, Any]]] = {}
        self.changed = asyncio.Event()

    async def on_answer(self, msg: Msg) -> None:
        event = json.loads(msg.data)
        data = event["data"]
        self.answers.setdefault(data["inbound_message_id"], {})[data["inbound_part"]] = event
        self.changed.set()

    async def submit(self, body: bytes, inbound: str = "submissions",
                     ) -> list[tuple[str, str | None, tuple[str, ...] | None]]:
        message_id = str(uuid.uuid4())
        await self.client.jetstream().publish(f"rapport.{self.tenant}.in.{inbound}", body, timeout=10,
                                              headers={"Nats-Msg-Id": message_id})
        async with asyncio.timeout(15):
            while True:
                got = self.answers.get(message_id, {})
                if got and len(got) == next(iter(got.values()))["data"]["inbound_parts"]:
                    break
                self.changed.clear()
                await self.changed.wait()
        out = []
        for n in sorted(got):
            event = got[n]
            if event["type"].endswith("accepted.v1"):
                out.append(("accepted", None, None))
            else:
                out.append(("rejected", None, tuple(sorted(p["code"] for p in event["data"]["problems"]))))
        return out


@asynccontextmanager
async def broker_answers(nats_url: str, tenant: str) -> AsyncIterator[BrokerAnswers]:
    nc = await nats.connect(nats_url)
    answers = BrokerAnswers(nc, tenant)
    for answered in ("submission.*", "attendance.accepted", "attendance.rejected"):
        await nc.subscribe(f"rapport.{tenant}.{answered}", cb=answers.on_answer)
    await nc.flush()
    try:
        yield answers
    finally:
        await nc.drain()


async def test_a_resend_gets_the_same_answer_and_stores_one_submission_and_a_202_is_answered_on_resend(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    settings = gateway_settings(database_url, key_file)
    body = fixture("fhir", "qr-linkid-q")
    async with serving(gateway_settings(database_url, key_file, gateway_answer_wait_seconds=0.5),
                       fresh_stream) as base, client(base, token(key_file, tenant)) as http:
        # ingest is not running yet: the broker has the message, no answer comes in time
        pending = await http.post("/fhir/QuestionnaireResponse", content=body,
                                  headers=fhir_json({"Idempotency-Key": "export-7781"}))
        assert pending.status_code == 202, pending.text
        assert pending.json()["issue"][0]["severity"] == "information"
        message_id = pending.headers["rapport-message-id"]
    async with running(["ingest"], settings, fresh_stream), serving(settings, fresh_stream) as base, \
            client(base, token(key_file, tenant)) as http:
        first = await http.post("/fhir/QuestionnaireResponse", content=body,
                                headers=fhir_json({"Idempotency-Key": "export-7781"}))
        assert first.status_code == 201, first.text
        assert first.headers["rapport-message-id"] == message_id
        again = await http.post("/fhir/QuestionnaireResponse", content=body,
                                headers=fhir_json({"Idempotency-Key": "export-7781"}))
        assert (again.status_code, again.json(), again.headers["location"]) == (
            201, first.json(), first.headers["location"])

        # without a key, the same body is the same message
        native = fixture("native", "phq9-complete")
        one = await http.post("/api/v1/submissions", content=native, headers={"Content-Type": "application/json"})
        two = await http.post("/api/v1/submissions", content=native, headers={"Content-Type": "application/json"})
        assert (one.status_code, two.status_code) == (201, 201)
        assert one.json() == two.json() and one.json()["disposition"] == "new"

        # a rejection is answered the same way again too
        bad = fixture("fhir", "qr-missing-item9")
        refused = [await http.post("/fhir/QuestionnaireResponse", content=bad, headers=fhir_json()) for _ in range(2)]
        assert [r.status_code for r in refused] == [422, 422] and refused[0].json() == refused[1].json()
    assert await stored_submissions(database_url, tenant) == 2


# refusals: nothing is published


@pytest_asyncio.fixture
async def published(fresh_stream: str) -> AsyncIterator[list[str]]:
    """Subjects of every inbound message published while the test runs (no ingest: nothing is taken)."""
    subjects: list[str] = []
    nc = await nats.connect(fresh_stream)

    async def seen(msg: Msg) -> None:
        subjects.append(msg.subject)

    await nc.subscribe("rapport.*.in.>", cb=seen)
    await nc.flush()
    yield subjects
    await nc.drain()


async def test_tokens_that_cannot_be_trusted_get_401_with_the_standard_challenge_and_no_detail(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path, published: list[str]
) -> None:
    body = fixture("fhir", "qr-linkid-loinc")
    stranger = mint(Ed25519PrivateKey.generate(), tenant=tenant, role="integration", audience="rapport",
                    now=NOW, ttl=timedelta(hours=1))  # signed with a key the gateway does not trust
    untrusted = {
        "expired": token(key_file, tenant, now=NOW - timedelta(hours=2), ttl=timedelta(hours=1)),
        "badly signed": stranger,
        "wrong audience": token(key_file, tenant, audience="another-service"),
        "wrong issuer": token(key_file, tenant, issuer="someone-else"),
        "tampered": token(key_file, tenant)[:-4] + "AAAA",
        "not a jwt": "not-a-token",
    }
    async with serving(gateway_settings(database_url, key_file), fresh_stream) as base:
        async with client(base) as http:
            anonymous = await http.post("/fhir/QuestionnaireResponse", content=body, headers=fhir_json())
            assert anonymous.status_code == 401
            assert anonymous.headers["www-authenticate"] == 'Bearer realm="rapport"'
            basic = await http.post("/api/v1/submissions", content=body,
                                    headers={"Content-Type": "application/json", "Authorization": "Basic dTpw"})
            assert basic.status_code == 401
        bodies = set()
        for why, bearer in untrusted.items():
            async with client(base, bearer) as http:
                response = await http.post("/fhir/QuestionnaireResponse", content=body, headers=fhir_json())
                assert response.status_code == 401, why
                assert response.headers["www-authenticate"] == 'Bearer realm="rapport", error="invalid_token"', why
                bodies.add(response.text)
        assert len(bodies) == 1, "the answer never says why a token was refused"
        assert "expired" not in bodies.pop().lower()
        for role in ("clinician", "lead", "admin"):
            extra = {"clinician": "clinician-03"} if role == "clinician" else {}
            async with client(base, token(key_file, tenant, role=role, **extra)) as http:
                forbidden = await http.post("/fhir/QuestionnaireResponse", content=body, headers=fhir_json())
                native = await http.post("/api/v1/submissions", content=body,
                                         headers={"Content-Type": "application/json"})
                assert (forbidden.status_code, native.status_code) == (403, 403), role
                assert forbidden.json()["issue"][0]["code"] == "forbidden"
                assert native.json()["problems"][0]["code"] == "forbidden"
    assert published == []


async def test_bodies_the_gateway_does_not_take_are_refused_before_anything_is_published(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path, published: list[str]
) -> None:
    settings = gateway_settings(database_url, key_file, gateway_max_body_bytes=4096, gateway_answer_wait_seconds=0.2)
    async with serving(settings, fresh_stream) as base, client(base, token(key_file, tenant)) as http:
        qr = "/fhir/QuestionnaireResponse"
        body = fixture("fhir", "qr-linkid-loinc")
        for content_type in ("text/plain", "application/xml", "application/fhir+json; charset=iso-8859-1", ""):
            response = await http.post(qr, content=body, headers={"Content-Type": content_type})
            assert response.status_code == 415, content_type
            assert response.json()["issue"][0]["code"] == "not-supported"
        native_as_fhir = await http.post("/api/v1/submissions", content=body,
                                         headers={"Content-Type": "application/fhir+json"})
        assert native_as_fhir.status_code == 415
        padded = json.loads(body) | {"text": {"status": "generated", "div": "x" * 4096}}
        too_large = await http.post(qr, json=padded, headers=fhir_json())
        assert too_large.status_code == 413 and too_large.json()["issue"][0]["code"] == "too-long"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
            for _ in range(10):
                yield b" " * 1000

        streamed = await http.post(qr, content=chunks(), headers=fhir_json())
        assert streamed.status_code == 413
        for not_json in (b"{", b"\xff\xfe{}", b"[1, 2]", b'"QuestionnaireResponse"'):
            response = await http.post(qr, content=not_json, headers=fhir_json())
            assert response.status_code == 400, not_json
        wrong_type = await http.post("/fhir/Observation", content=body, headers=fhir_json())
        assert wrong_type.status_code == 400 and wrong_type.json()["issue"][0]["diagnostics"].startswith(
            "this endpoint takes a Observation")
        native_fhir = await http.post("/api/v1/submissions", content=body, headers={"Content-Type": "application/json"})
        assert native_fhir.status_code == 400 and native_fhir.json()["problems"][0]["field"] == "resourceType"
        bad_key = await http.post(qr, content=body, headers=fhir_json({"Idempotency-Key": "has space"}))
        assert bad_key.status_code == 400
        transaction = await http.post("/fhir", content=fixture("fhir", "bundle-transaction"), headers=fhir_json())
        assert transaction.status_code == 422
        assert "send the same entries as a batch" in transaction.json()["issue"][0]["diagnostics"]
        assert published == []
        # at the limit it goes through (no ingest running: 202)
        fits = json.loads(body)
        fits["text"] = {"status": "generated", "div": ""}
        fits["text"]["div"] = "x" * (4096 - len(json.dumps(fits)))
        at_limit = json.dumps(fits).encode()
        assert len(at_limit) == 4096
        accepted = await http.post(qr, content=at_limit, headers=fhir_json())
        assert accepted.status_code == 202, accepted.text
        await asyncio.sleep(0.2)
        assert published == [f"rapport.{tenant}.in.submissions"]


async def test_a_token_of_one_tenant_never_submits_for_another_whatever_the_body_says(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path, published: list[str]
) -> None:
    settings = gateway_settings(database_url, key_file)
    async with running(["ingest"], settings, fresh_stream), serving(settings, fresh_stream) as base, \
            client(base, token(key_file, tenant)) as http:
        names_another = await http.post("/api/v1/submissions", content=fixture("native", "tenant-mismatch"),
                                        headers={"Content-Type": "application/json"})
        assert names_another.status_code == 422
        assert [p["code"] for p in names_another.json()["problems"]] == ["tenant_mismatch"]
        ok = await http.post("/api/v1/submissions", content=fixture("native", "phq9-complete"),
                             headers={"Content-Type": "application/json"})
        assert ok.status_code == 201
    assert published == [f"rapport.{tenant}.in.submissions"] * 2
    assert await stored_submissions(database_url, tenant) == 1
    assert await stored_submissions(database_url, "another-clinic") == 0


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "broker")
    server.start()
    yield server
    server.stop()


async def test_with_the_broker_down_a_submission_gets_503_with_retry_after(
    sqlite_databases: Any, own_broker: EmbeddedNats, tenant: str, key_file: Path
) -> None:
    database_url = await sqlite_databases.sqlite()
    settings = gateway_settings(database_url, key_file, gateway_answer_wait_seconds=0.2)
    async with serving(settings, own_broker.url) as base, client(base, token(key_file, tenant)) as http:
        up = await http.post("/fhir/QuestionnaireResponse", content=fixture("fhir", "qr-linkid-loinc"),
                             headers=fhir_json())
        assert up.status_code == 202
        own_broker.stop()
        down = await http.post("/fhir/QuestionnaireResponse", content=fixture("fhir", "qr-linkid-q"),
                               headers=fhir_json())
        assert down.status_code == 503, down.text
        assert down.headers["retry-after"] == "5"
        assert down.json()["issue"][0]["code"] == "transient"
        native = await http.post("/api/v1/submissions", content=fixture("native", "phq9-complete"),
                                 headers={"Content-Type": "application/json"})
        assert native.status_code == 503 and native.headers["retry-after"] == "5"
        ready = await http.get("/readyz")
        assert ready.status_code == 503
