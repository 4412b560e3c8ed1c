"""Ingest carries out the admin API's questionnaire-mapping commands: the batch's tenants' mappings read once,
each command in order, one answer per command on its own tenant's subject, never another tenant's mappings."""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rapport.services.ingest.handlers import QuestionnaireMappingCommands
from rapport.services.ingest.normalise.outcome import QuestionnaireMap
from rapport.services.ingest.repository import ImportedQuestionnaire, questionnaire_key
from rapport.services.ingest.unit_of_work import MappingUnitOfWork
from rapport.shared.contracts.envelope import CloudEvent
from rapport.shared.instruments import load_registry
from rapport.shared.messaging.consumer import Inbound

FIXTURES = Path(__file__).parents[1] / "fixtures" / "fhir"
QUESTIONNAIRE = json.loads((FIXTURES / "questionnaire-tenant-phq9-local-codes.json").read_bytes())
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
REGISTRY = load_registry()


class InMemoryMappings:
    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], ImportedQuestionnaire] = {}
        self.reads: list[set[str]] = []

    async def imported(self, tenants: Collection[str]) -> dict[str, list[ImportedQuestionnaire]]:
        self.reads.append(set(tenants))
        found: dict[str, list[ImportedQuestionnaire]] = {}
        for (tenant, _), imported in sorted(self.stored.items()):
            if tenant in tenants:
                found.setdefault(tenant, []).append(imported)
        return found

    async def save(self, tenant: str, form: QuestionnaireMap, now: datetime) -> bool:
        key = questionnaire_key(form.canonical, form.version)
        replaced = (tenant, key) in self.stored
        self.stored[(tenant, key)] = ImportedQuestionnaire(key, form, now)
        return replaced

    async def remove(self, tenant: str, mapping_id: str) -> bool:
        return self.stored.pop((tenant, mapping_id), None) is not None


def command(tenant: str, n: int, action: str, **fields: Any) -> Inbound:
    body = {"command_id": f"http-mapping-{n}", "action": action, "by": "admin-01", **fields}
    return Inbound(message_id=f"http-mapping-{n}", subject=f"rapport.{tenant}.in.questionnaire-mappings",
                   tenant=tenant, body=json.dumps(body).encode(), deliveries=1)


def answers(uow: MappingUnitOfWork) -> list[tuple[str, str, dict[str, Any]]]:
    said = []
    for event in uow.events:
        envelope = CloudEvent.model_validate_json(event.body)
        said.append((event.subject.split(".")[1], event.subject.rsplit(".", 1)[1], envelope.data))
    return said


async def test_a_batch_stores_lists_and_removes_in_order_with_one_read_and_one_answer_per_command() -> None:
    stored = InMemoryMappings()
    uow = MappingUnitOfWork(stored, NOW)
    mapping_id = questionnaire_key("https://forms.clinic.example/fhir/Questionnaire/clinic-mood", "3")
    await QuestionnaireMappingCommands(REGISTRY)(uow, [
        command("clinic-a", 1, "store", questionnaire=QUESTIONNAIRE),
        command("clinic-b", 2, "list"),
        command("clinic-a", 3, "list"),
        command("clinic-a", 4, "store", questionnaire=QUESTIONNAIRE),
        command("clinic-b", 5, "remove", mapping_id=mapping_id),
        command("clinic-a", 6, "remove", mapping_id=mapping_id),
        command("clinic-a", 7, "list"),
    ])
    assert stored.reads == [{"clinic-a", "clinic-b"}]
    said = answers(uow)
    assert [(t, verb, d["command_id"], d["outcome"]) for t, verb, d in said] == [
        ("clinic-a", "stored", "http-mapping-1", "imported"),
        ("clinic-b", "listed", "http-mapping-2", "listed"),
        ("clinic-a", "listed", "http-mapping-3", "listed"),
        ("clinic-a", "stored", "http-mapping-4", "replaced"),
        ("clinic-b", "rejected", "http-mapping-5", "not_found"),  # another tenant's mapping: as if none
        ("clinic-a", "removed", "http-mapping-6", "removed"),
        ("clinic-a", "listed", "http-mapping-7", "listed"),
    ]
    assert said[1][2]["mappings"] == [] and said[6][2]["mappings"] == []
    [shown] = said[2][2]["mappings"]
    assert (shown["mapping_id"], shown["instrument"], shown["link_ids"]["mood-i"]) == (mapping_id, "phq9", 9)
    assert stored.stored == {}
    assert len({e.event_id for e in uow.events}) == len(uow.events)


async def test_a_questionnaire_that_cannot_be_read_or_a_command_that_is_none_changes_nothing_and_says_why() -> None:
    stored = InMemoryMappings()
    uow = MappingUnitOfWork(stored, NOW)
    response = json.loads((FIXTURES / "qr-tenant-questionnaire-local-codes.json").read_bytes())
    garbage = Inbound(message_id="x", subject="rapport.clinic-a.in.questionnaire-mappings", tenant="clinic-a",
                      body=b'{"action": "drop tables"}', deliveries=1)
    await QuestionnaireMappingCommands(REGISTRY)(uow, [
        command("clinic-a", 1, "store", questionnaire=response),
        command("clinic-a", 2, "store"),
        command("clinic-a", 3, "store", questionnaire=QUESTIONNAIRE, instrument="nothing"),
        garbage,
    ])
    said = answers(uow)
    assert [(verb, d["outcome"], [p["code"] for p in d["problems"]][:1]) for _, verb, d in said] == [
        ("rejected", "refused", ["not_a_questionnaire"]),
        ("rejected", "refused", ["missing_field"]),
        ("rejected", "refused", ["unknown_instrument"]),
        ("rejected", "refused", ["invalid_command"]),
    ]
    assert said[3][2]["command_id"] is None
    assert stored.stored == {}
