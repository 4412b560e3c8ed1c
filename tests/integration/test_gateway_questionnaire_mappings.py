"""A tenant's own Questionnaires through the gateway's admin API, over real HTTP and the real NATS JetStream,
on SQLite and PostgreSQL: an admin stores, lists, reads, replaces and deletes a mapping, which ingest (the one
owner of the mappings) carries out and answers, and applies to the tenant's next response; another tenant's
admin gets 404, a clinician and a lead 403; every request is in the audit trail. Synthetic forms only."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from harness import running, until, watching
from test_gateway import (  # noqa: F401 (own_broker: a fixture)
    client,
    fhir_json,
    gateway_settings,
    own_broker,
    serving,
    stored_submissions,
    token,
)

from rapport.embedded_nats import EmbeddedNats
from rapport.services.gateway.audit import AuditFilters, AuditTrail
from rapport.shared.db.engine import create_engine, session_factory

pytestmark = pytest.mark.nats

FIXTURES = Path(__file__).parents[1] / "fixtures" / "fhir"
QUESTIONNAIRE = FIXTURES / "questionnaire-tenant-phq9-local-codes.json"
RESPONSE = FIXTURES / "qr-tenant-questionnaire-local-codes.json"
ROUTE = "/api/v1/questionnaire-mappings"


def longest_tenant(prefix: str) -> str:
    return (prefix + uuid.uuid4().hex + "-" * 64)[:64]


def response(n: int) -> bytes:
    return json.dumps({**json.loads(RESPONSE.read_bytes()), "id": f"qr-tenant-mood-{n:04d}"}).encode()


async def answer_to(watch: Any, body: bytes) -> dict[str, Any]:
    journey = await watch.submit(body)
    await watch.wait_until(lambda: journey.answered is not None)
    return dict(journey.answers[0])


async def audit_of(database_url: str, tenant: str) -> list[tuple[str, str | None, int, str | None]]:
    engine = create_engine(database_url)
    try:
        entries = await AuditTrail(session_factory(engine)).entries(AuditFilters(tenant=tenant))
    finally:
        await engine.dispose()
    return [(e.action, e.resource, e.outcome, e.detail) for e in reversed(entries)]


async def test_an_admin_manages_the_tenants_mappings_and_ingest_applies_them_for_that_tenant_only(
    database_url: str, fresh_stream: str, key_file: Path
) -> None:
    tenant, other = longest_tenant("clinic-a"), longest_tenant("clinic-b")
    settings = gateway_settings(database_url, key_file)
    admin, elsewhere = token(key_file, tenant, "admin"), token(key_file, other, "admin")
    clinician, lead = token(key_file, tenant, "clinician", clinician="clinician-07"), token(key_file, tenant, "lead")
    questionnaire = QUESTIONNAIRE.read_bytes()
    async with running(["ingest"], settings, fresh_stream), serving(settings, fresh_stream) as base, \
            watching(fresh_stream, tenant) as watch, client(base, admin) as http:
        assert (await http.get(ROUTE)).json() == {"mappings": []}
        assert (await answer_to(watch, response(1)))["kind"] == "rapport.submission.rejected.v1"

        stored = await http.put(ROUTE, content=questionnaire, headers=fhir_json())
        assert stored.status_code == 201, stored.text
        mapping = stored.json()
        mapping_id = mapping["mapping_id"]
        assert (mapping["canonical"], mapping["version"], mapping["instrument"]) == (
            "https://forms.clinic.example/fhir/Questionnaire/clinic-mood", "3", "phq9")
        assert mapping["link_ids"]["mood-i"] == 9 and mapping["weights"]["mood-i"]["daily"] == 3
        replaced = await http.put(ROUTE, content=questionnaire, headers=fhir_json())
        assert replaced.status_code == 200 and replaced.json()["mapping_id"] == mapping_id
        [listed] = (await http.get(ROUTE)).json()["mappings"]
        assert listed["mapping_id"] == mapping_id
        assert (await http.get(f"{ROUTE}/{mapping_id}")).json()["link_ids"] == mapping["link_ids"]

        accepted = await answer_to(watch, response(2))  # ingest reads the mapping with its next batch
        assert accepted["kind"] == "rapport.submission.accepted.v1", accepted
        assert accepted["submission"]["instrument"] == "phq9" and accepted["submission"]["responses"]["9"] == 2

        refused = await http.put(ROUTE, content=RESPONSE.read_bytes(), headers=fhir_json())
        assert refused.status_code == 422
        assert [p["code"] for p in refused.json()["problems"]] == ["not_a_questionnaire"]
        unknown = await http.put(ROUTE, params={"instrument": "nothing"}, content=questionnaire, headers=fhir_json())
        assert unknown.status_code == 422 and unknown.json()["problems"][0]["code"] == "unknown_instrument"

        async with client(base, elsewhere) as theirs:  # another tenant's admin: not theirs, as if it did not exist
            assert (await theirs.get(f"{ROUTE}/{mapping_id}")).status_code == 404
            assert (await theirs.delete(f"{ROUTE}/{mapping_id}")).status_code == 404
            assert (await theirs.get(ROUTE)).json() == {"mappings": []}
        for bearer in (clinician, lead):
            async with client(base, bearer) as other_role:
                assert (await other_role.get(ROUTE)).status_code == 403
                assert (await other_role.get(f"{ROUTE}/{mapping_id}")).status_code == 403
                assert (await other_role.put(ROUTE, content=questionnaire, headers=fhir_json())).status_code == 403
                assert (await other_role.delete(f"{ROUTE}/{mapping_id}")).status_code == 403
        assert (await http.get(ROUTE)).json()["mappings"][0]["mapping_id"] == mapping_id  # still there

        assert (await http.delete(f"{ROUTE}/{mapping_id}")).status_code == 204
        assert (await http.get(f"{ROUTE}/{mapping_id}")).status_code == 404
        assert (await http.delete(f"{ROUTE}/{mapping_id}")).status_code == 404
        assert (await http.delete(f"{ROUTE}/not-an-id")).status_code == 404
        assert (await answer_to(watch, response(3)))["kind"] == "rapport.submission.rejected.v1"
        assert await stored_submissions(database_url, tenant) == 1  # the one accepted with the mapping stays

    key = f"questionnaire-mapping/{mapping_id}"
    trail = await audit_of(database_url, tenant)
    action = "manage_questionnaire_mappings"
    assert trail == [
        (action, "questionnaire-mappings", 200, "list 0"),
        (action, key, 201, "store imported"),
        (action, key, 200, "store replaced"),
        (action, "questionnaire-mappings", 200, "list 1"),
        (action, key, 200, "read"),
        (action, "questionnaire-mappings", 422, "store refused"),
        (action, "questionnaire-mappings", 422, "store refused"),
        *[(action, None, 403, "forbidden")] * 8,
        (action, "questionnaire-mappings", 200, "list 1"),
        (action, key, 204, "remove removed"),
        (action, key, 404, "read"),
        (action, key, 404, "remove not_found"),
        (action, "questionnaire-mapping/not-an-id", 404, "remove"),
    ]
    assert await audit_of(database_url, other) == [
        (action, key, 404, "read"), (action, key, 404, "remove not_found"),
        (action, "questionnaire-mappings", 200, "list 0")]


async def test_a_change_ingest_has_not_answered_is_202_and_carried_out_once_ingest_runs(
    database_url: str, fresh_stream: str, key_file: Path
) -> None:
    tenant = longest_tenant("clinic-c")
    settings = gateway_settings(database_url, key_file, gateway_answer_wait_seconds=0.5)
    async with serving(settings, fresh_stream) as base, client(base, token(key_file, tenant, "admin")) as http:
        pending = await http.put(ROUTE, content=QUESTIONNAIRE.read_bytes(), headers=fhir_json())
        assert pending.status_code == 202 and pending.json()["status"] == "pending"
        unanswered = await http.get(ROUTE)
        assert unanswered.status_code == 503 and unanswered.headers["retry-after"] == "5"
        async with running(["ingest"], settings, fresh_stream):
            async def listed() -> list[dict[str, Any]]:
                answered = await http.get(ROUTE)
                return list(answered.json()["mappings"]) if answered.status_code == 200 else []
            [mapping] = await until(listed)
        assert mapping["canonical"] == "https://forms.clinic.example/fhir/Questionnaire/clinic-mood"


async def test_without_the_broker_a_change_is_503_and_audited(
    database_url: str, key_file: Path, own_broker: EmbeddedNats  # noqa: F811
) -> None:
    tenant = longest_tenant("clinic-d")
    settings = gateway_settings(database_url, key_file)
    async with serving(settings, own_broker.url) as base, client(base, token(key_file, tenant, "admin")) as http:
        own_broker.stop()
        gone = await http.put(ROUTE, content=QUESTIONNAIRE.read_bytes(), headers=fhir_json())
        assert gone.status_code == 503 and gone.json()["problems"][0]["code"] == "broker_unavailable"
        assert gone.headers["retry-after"] == "5"
    assert await audit_of(database_url, tenant) == [
        ("manage_questionnaire_mappings", "questionnaire-mappings", 503, "broker_unavailable")]
