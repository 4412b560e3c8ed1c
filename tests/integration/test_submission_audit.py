"""Submissions and attendance over HTTP are in the audit trail, with real parts: ingest and the gateway
(under uvicorn) on the real NATS JetStream, on SQLite and PostgreSQL. Each answer, each part of a
Bundle and each refusal is a row: who (the token's subject and role; nobody for a missing token),
`submit` or `record_attendance`, the stored record's id (never the body), the status answered and
a short code for what was not accepted. A clinic's admin reads them in /api/v1/audit; another
tenant's requests are in that tenant's trail only. Synthetic people only."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from harness import running
from test_gateway import client, fhir_json, fixture, gateway_settings, serving, token
from test_gateway_attendance import native as native_attendance

from rapport.services.gateway.audit import AuditFilters, AuditTrail
from rapport.shared.db.engine import create_engine, session_factory

pytestmark = pytest.mark.nats

NATIVE = {"Content-Type": "application/json"}
IDS_ONLY = re.compile(r"^(submission|appointment|ending|message)/[A-Za-z0-9_.\-:/]{1,128}$")
LONGEST_ID = "s" * 128  # a submission id at its contract's longest



def native_submission(submission_id: str, **changes: Any) -> bytes:
    document = json.loads(fixture("native", "phq9-complete"))
    return json.dumps({**document, "submission_id": submission_id, **changes}).encode()


async def trail(base: str, admin: str, action: str) -> list[dict[str, Any]]:
    """The tenant's rows of one action, oldest first, as its admin reads them."""
    async with client(base, admin) as http:
        answer = await http.get("/api/v1/audit", params={"action": action, "limit": 500})
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["entries"]
    return list(reversed(rows))


async def every_row(database_url: str) -> list[Any]:
    engine = create_engine(database_url)
    try:
        return list(reversed(await AuditTrail(session_factory(engine)).entries(AuditFilters(), limit=500)))
    finally:
        await engine.dispose()


async def test_each_submission_bundle_part_attendance_and_refusal_is_an_audit_row_of_ids(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    settings = gateway_settings(database_url, key_file)
    integration, admin = token(key_file, tenant, "integration"), token(key_file, tenant, "admin")
    async with running(["ingest"], settings, fresh_stream), serving(settings, fresh_stream) as base, \
            client(base, integration) as http:
        accepted = await http.post("/api/v1/submissions", content=native_submission(LONGEST_ID), headers=NATIVE)
        rejected = await http.post("/api/v1/submissions", content=fixture("native", "phq9-missing-item9"),
                                   headers=NATIVE)
        fhir = await http.post("/fhir/QuestionnaireResponse", content=fixture("fhir", "qr-linkid-loinc"),
                               headers=fhir_json())
        bundle = await http.post("/fhir", content=fixture("fhir", "bundle-collection"), headers=fhir_json())
        attended = await http.post("/api/v1/attendance", content=native_attendance("appt-0701-01"), headers=NATIVE)
        assert [r.status_code for r in (accepted, rejected, fhir, bundle, attended)] == [201, 422, 201, 200, 201]
        # refusals: wrong content type, a role that may not submit, no token at all
        unsupported = await http.post("/api/v1/submissions", content=b"{}", headers={"Content-Type": "text/plain"})
        lead = token(key_file, tenant, "lead")
        by_lead = await http.post("/api/v1/submissions", content=native_submission("sub-0702"),
                                  headers={**NATIVE, "Authorization": f"Bearer {lead}"})
        async with client(base) as anonymous:
            nobody = await anonymous.post("/fhir/Appointment", content=b"{}", headers=fhir_json())
        assert (unsupported.status_code, by_lead.status_code, nobody.status_code) == (415, 403, 401)
        # another tenant's submission is in its own trail, not this one's
        elsewhere = await http.post("/api/v1/submissions", content=native_submission("sub-0703"), headers={
            **NATIVE, "Authorization": f"Bearer {token(key_file, f'{tenant}x', 'integration')}"})
        assert elsewhere.status_code == 201

        submitted = await trail(base, admin, "submit")
        assert [(r["resource"], r["outcome"], r["detail"]) for r in submitted] == [
            (f"submission/{LONGEST_ID}", 201, "accepted"),
            (f"submission/{rejected.json()['submission_id']}", 422, rejected.json()["problems"][0]["code"]),
            (f"submission/{json.loads(fixture('fhir', 'qr-linkid-loinc'))['id']}", 201, "accepted"),
            ("submission/qr-0501", 200, "accepted"),  # the Bundle's two parts (its Patient entry is no part)
            ("submission/qr-0502", 200, "status_not_final"),
            (None, 415, "unsupported_media_type"),
            (None, 403, "forbidden"),
        ]
        assert {(r["subject"], r["role"], r["credential"]) for r in submitted[:-1]} == {
            (f"integration@{tenant}", "integration", "bearer")}
        assert (submitted[-1]["subject"], submitted[-1]["role"]) == (f"lead@{tenant}", "lead")
        attendance = await trail(base, admin, "record_attendance")
        assert [(r["resource"], r["outcome"], r["detail"]) for r in attendance] == [
            ("appointment/appt-0701-01", 201, "accepted")]
        every = await every_row(database_url)
        assert [(r.tenant, r.subject, r.action, r.outcome, r.detail) for r in every if r.outcome == 401] == [
            (None, None, "record_attendance", 401, "unauthenticated")]
        assert [r.resource for r in every if r.tenant == f"{tenant}x"] == ["submission/sub-0703"]
        assert all(r.resource is None or IDS_ONLY.fullmatch(r.resource) for r in every)
        assert not any("client-0007" in str(r.as_json()) or "responses" in str(r.as_json()) for r in every)


async def test_a_resend_is_audited_again_and_a_pending_answer_names_the_message(
    sqlite_databases: Any, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    """Without ingest running nobody answers: the 202 is audited by the message's id; once ingest
    answers, the resend's 201 is a row of its own naming the submission."""
    settings = gateway_settings(await sqlite_databases.sqlite(), key_file, gateway_answer_wait_seconds=0.5)
    admin = token(key_file, tenant, "admin")
    async with serving(settings, fresh_stream) as base, client(base, token(key_file, tenant)) as http:
        body = native_submission("sub-0801")
        pending = await http.post("/api/v1/submissions", content=body, headers=NATIVE)
        assert pending.status_code == 202
        async with running(["ingest"], settings.model_copy(update={"gateway_answer_wait_seconds": 15.0}),
                           fresh_stream):
            answered = await http.post("/api/v1/submissions", content=body, headers=NATIVE)
        assert answered.status_code == 201
        rows = await trail(base, admin, "submit")
        assert [(r["resource"], r["outcome"], r["detail"]) for r in rows] == [
            (f"message/{pending.json()['message_id']}", 202, "pending"),
            ("submission/sub-0801", 201, "accepted")]
