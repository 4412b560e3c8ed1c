"""A tenant's own Questionnaire, imported with `rapport questionnaires import`, stored in ingest's database on
SQLite and PostgreSQL and applied by ingest over the real NATS JetStream, for that tenant only."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import running, settings_for, watching
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.questionnaires import read_file, remove, store, tenant_forms
from rapport.services.ingest.normalise.outcome import QuestionnaireMap
from rapport.services.ingest.repository import SqlQuestionnaireMappings, submissions
from rapport.shared.db.engine import create_engine

FIXTURES = Path(__file__).parents[1] / "fixtures" / "fhir"
QUESTIONNAIRE = FIXTURES / "questionnaire-tenant-phq9-local-codes.json"
RESPONSE = FIXTURES / "qr-tenant-questionnaire-local-codes.json"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def longest_tenant(prefix: str) -> str:
    return (prefix + uuid.uuid4().hex + "-" * 64)[:64]


async def test_mappings_at_their_longest_are_stored_replaced_and_read_per_tenant(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    tenant, other = longest_tenant("t"), longest_tenant("u")
    canonical = ("https://forms.clinic.example/fhir/Questionnaire/" + "x" * 1024)[:1024]
    form = QuestionnaireMap(canonical=canonical, version="v" * 64, instrument="phq9",
                            link_ids={"mood-a": 1, "mood-i": 9}, weights={"mood-i": {"daily": 3.0, "never": 0.0}},
                            source="imported Questionnaire", displays={"mood-i": {"Every day": "daily"}})
    async with sessions() as session, session.begin():
        assert await SqlQuestionnaireMappings(session).save(tenant, form, NOW) is False
    changed = QuestionnaireMap(canonical=canonical, version="v" * 64, instrument="phq9", link_ids={"mood-a": 2})
    async with sessions() as session, session.begin():
        assert await SqlQuestionnaireMappings(session).save(tenant, changed, NOW) is True
        assert await SqlQuestionnaireMappings(session).save(tenant, form, NOW) is True
    async with sessions() as session:
        found = await SqlQuestionnaireMappings(session).load([tenant, other])
        assert await SqlQuestionnaireMappings(session).load([]) == {}
    assert list(found) == [tenant]
    [stored] = [f for forms in found[tenant].forms.values() for f in forms]
    assert stored == form


async def _answer(watch: Any, tenant_body: bytes) -> dict[str, Any]:
    journey = await watch.submit(tenant_body)
    await watch.wait_until(lambda: journey.answered is not None)
    [answer] = journey.answers
    return dict(answer)


async def test_an_imported_questionnaire_makes_a_rejected_response_accepted_for_that_tenant_only(
        database_url: str, fresh_stream: str) -> None:
    tenant, other = longest_tenant("clinic-a"), longest_tenant("clinic-b")
    response = json.loads(RESPONSE.read_bytes())

    def body(n: int) -> bytes:
        return json.dumps({**response, "id": f"qr-tenant-mood-{n:04d}"}).encode()

    async with running(["ingest"], settings_for(database_url), fresh_stream), \
            watching(fresh_stream, tenant) as mine, watching(fresh_stream, other) as theirs:
        before = await _answer(mine, body(1))
        assert before["kind"] == "rapport.submission.rejected.v1"
        assert {p["code"] for p in before["problems"]} >= {"unknown_instrument"}

        form = read_file(QUESTIONNAIRE)
        said = await store(database_url, tenant, form)
        assert said.startswith("imported https://forms.clinic.example/fhir/Questionnaire/clinic-mood|3")
        assert [f.canonical for f in await tenant_forms(database_url, tenant)] == [form.canonical]

        after = await _answer(mine, body(2))
        assert after["kind"] == "rapport.submission.accepted.v1", after
        submission = after["submission"]
        assert submission["instrument"] == "phq9" and submission["responses"]["9"] == 2
        assert sum(v for k, v in submission["responses"].items() if k != "10") == 12

        elsewhere = await _answer(theirs, body(3))
        assert elsewhere["kind"] == "rapport.submission.rejected.v1"  # another tenant: not its Questionnaire
        assert await tenant_forms(database_url, other) == []

        # removed: the next response is refused again, and the one accepted with the mapping stays as it was
        said = await remove(database_url, tenant, f"{form.canonical}|{form.version}")
        assert said.startswith(f"removed {form.canonical}|3 for tenant {tenant}")
        assert await tenant_forms(database_url, tenant) == []
        gone = await _answer(mine, body(4))
        assert gone["kind"] == "rapport.submission.rejected.v1"
        assert {p["code"] for p in gone["problems"]} >= {"unknown_instrument"}
        engine = create_engine(database_url)
        try:
            async with engine.connect() as connection:
                kept = (await connection.execute(select(submissions.c.submission_id, submissions.c.document).where(
                    submissions.c.tenant == tenant))).all()
        finally:
            await engine.dispose()
        assert [r.submission_id for r in kept] == ["qr-tenant-mood-0002"]
        assert kept[0].document["responses"] == submission["responses"]



async def test_the_command_lists_shows_refuses_and_imports_as_clinic_it_would_use_it(database_url: str) -> None:
    from typer.testing import CliRunner

    from rapport.cli import app

    env = {"RAPPORT_DATABASE_URL": database_url}

    def rapport(*args: str) -> Any:
        return CliRunner().invoke(app, ["questionnaires", *args], env=env)

    listed = await asyncio.to_thread(rapport, "list")
    assert listed.exit_code == 0, listed.output
    assert all(c in listed.output for c in ("mii-qst-pro-phq-9", "mii-qst-pro-gad-7", "Questionnaire/phq9",
                                            "Questionnaire/gad7"))
    shown = await asyncio.to_thread(
        rapport, "show", "https://www.medizininformatik-initiative.de/fhir/ext/modul-pro/Questionnaire/mii-qst-pro-phq-9")
    assert shown.exit_code == 0 and "phq-phq2i" in shown.output and "LA6571-9=3" in shown.output
    unknown = await asyncio.to_thread(rapport, "show", "https://forms.clinic.example/fhir/Questionnaire/nothing")
    assert unknown.exit_code == 1

    tenant = longest_tenant("cli")
    refused = await asyncio.to_thread(rapport, "import", str(RESPONSE), "--tenant", tenant)
    assert refused.exit_code == 1 and "not_a_questionnaire" in refused.output
    imported = await asyncio.to_thread(rapport, "import", str(QUESTIONNAIRE), "--tenant", tenant)
    assert imported.exit_code == 0, imported.output
    assert imported.output.startswith("imported https://forms.clinic.example/fhir/Questionnaire/clinic-mood|3")
    again = await asyncio.to_thread(rapport, "import", str(QUESTIONNAIRE), "--tenant", tenant)
    assert again.output.startswith("replaced ")
    mine = await asyncio.to_thread(rapport, "list", "--tenant", tenant)
    assert f"imported by {tenant}" in mine.output
    theirs = await asyncio.to_thread(rapport, "list", "--tenant", longest_tenant("other"))
    assert "imported by" not in theirs.output
    own = await asyncio.to_thread(rapport, "show", "https://forms.clinic.example/fhir/Questionnaire/clinic-mood|3",
                                  "--tenant", tenant)
    assert own.exit_code == 0 and "mood-i" in own.output and "daily=3" in own.output

    listed = await asyncio.to_thread(rapport, "mappings", "--tenant", tenant)
    assert listed.exit_code == 0, listed.output
    [row] = listed.output.splitlines()[1:]
    assert row.split()[:4] == ["https://forms.clinic.example/fhir/Questionnaire/clinic-mood", "3", "phq9", "9"]
    mapping_id = row.split()[-1]
    assert len(mapping_id) == 64
    bare = await asyncio.to_thread(rapport, "remove", "https://forms.clinic.example/fhir/Questionnaire/clinic-mood",
                                   "--tenant", tenant)
    assert bare.exit_code == 1 and "clinic-mood|3: name one as it is listed" in bare.output
    elsewhere = await asyncio.to_thread(rapport, "remove", "https://forms.clinic.example/fhir/Questionnaire/clinic-mood|3",
                                        "--tenant", longest_tenant("other"))
    assert elsewhere.exit_code == 1 and "has no imported Questionnaire" in elsewhere.output
    removed = await asyncio.to_thread(rapport, "remove", "https://forms.clinic.example/fhir/Questionnaire/clinic-mood|3",
                                      "--tenant", tenant)
    assert removed.exit_code == 0, removed.output
    assert "nothing already accepted changes" in removed.output
    empty = await asyncio.to_thread(rapport, "mappings", "--tenant", tenant)
    assert empty.exit_code == 0 and empty.output.strip() == f"tenant {tenant} has imported no Questionnaire"
    again = await asyncio.to_thread(rapport, "remove", "https://forms.clinic.example/fhir/Questionnaire/clinic-mood|3",
                                    "--tenant", tenant)
    assert again.exit_code == 1
    helped = await asyncio.to_thread(rapport, "remove", "--help")
    assert "Nothing already accepted changes" in " ".join(helped.output.split())
