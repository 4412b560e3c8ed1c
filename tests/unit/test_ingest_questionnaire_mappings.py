"""Ingest reads the batch's tenants' imported Questionnaires once per batch and applies each only to its tenant."""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path

from fakes import InMemorySubmissions

from rapport.services.ingest.handlers import Ingest
from rapport.services.ingest.normalise import TenantMapping
from rapport.services.ingest.normalise.fhir.catalogue import read_questionnaire
from rapport.services.ingest.normalise.outcome import QuestionnaireMap
from rapport.services.ingest.unit_of_work import IngestUnitOfWork
from rapport.shared.instruments import load_registry
from rapport.shared.messaging.consumer import Inbound
from rapport.shared.settings import Settings

FIXTURES = Path(__file__).parents[1] / "fixtures" / "fhir"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
REGISTRY = load_registry()


class InMemoryMappings:
    def __init__(self, forms: dict[str, list[QuestionnaireMap]]) -> None:
        self.forms = forms
        self.reads: list[set[str]] = []

    async def load(self, tenants: Collection[str]) -> dict[str, TenantMapping]:
        self.reads.append(set(tenants))
        return {t: TenantMapping.of_forms(self.forms[t]) for t in tenants if t in self.forms}


def response(tenant: str, n: int) -> Inbound:
    body = json.loads((FIXTURES / "qr-tenant-questionnaire-local-codes.json").read_bytes())
    body["id"] = f"qr-tenant-mood-{n:04d}"
    return Inbound(message_id=f"m-{tenant}-{n}", subject=f"rapport.{tenant}.in.submissions", tenant=tenant,
                   body=json.dumps(body).encode(), deliveries=1)


async def test_one_read_per_batch_and_a_tenants_questionnaire_applies_to_that_tenant_only() -> None:
    form = read_questionnaire(json.loads((FIXTURES / "questionnaire-tenant-phq9-local-codes.json").read_bytes()),
                              REGISTRY)
    assert isinstance(form, QuestionnaireMap)
    mappings = InMemoryMappings({"clinic-a": [form]})
    uow = IngestUnitOfWork(InMemorySubmissions(), NOW, mappings)
    await Ingest(REGISTRY, Settings())(uow, [response("clinic-a", 1), response("clinic-b", 2), response("clinic-a", 3)])
    assert mappings.reads == [{"clinic-a", "clinic-b"}]
    answers = [(e.subject.split(".")[1], e.subject.rsplit(".", 1)[1]) for e in uow.events]
    assert answers == [("clinic-a", "accepted"), ("clinic-b", "rejected"), ("clinic-a", "accepted")]
