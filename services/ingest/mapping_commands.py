"""What a questionnaire-mapping command does to a tenant's mappings: a plain function over plain data.

The commands come from the gateway's admin API (shared/contracts/questionnaire_mapping.py). `store` reads
the Questionnaire exactly as `rapport questionnaires import` does (fhir/catalogue.py `read_questionnaire`)
and refuses it with the same problems; `remove` takes one mapping away by its id; `list` says what there
is. A mapping of another tenant is never visible: the caller passes only this tenant's mappings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from pydantic import ValidationError

from rapport.services.ingest.normalise.fhir.catalogue import read_questionnaire
from rapport.services.ingest.normalise.outcome import QuestionnaireMap
from rapport.services.ingest.repository import ImportedQuestionnaire, questionnaire_key
from rapport.shared.contracts.problems import Problem
from rapport.shared.contracts.questionnaire_mapping import (
    MappingShown,
    QuestionnaireMappingAnswer,
    QuestionnaireMappingCommand,
)
from rapport.shared.instruments import Registry


@dataclass(frozen=True)
class Outcome:
    answer: QuestionnaireMappingAnswer
    imported: list[ImportedQuestionnaire]  # the tenant's mappings after the command
    stored: QuestionnaireMap | None = None
    removed: str | None = None  # a mapping id


def carry_out(body: bytes, imported: list[ImportedQuestionnaire], registry: Registry, now: datetime) -> Outcome:
    """One command against one tenant's mappings (in the order they were stored)."""
    try:
        command = QuestionnaireMappingCommand.model_validate_json(body)
    except ValidationError as error:
        problems = [Problem(field=".".join(str(p) for p in e["loc"]), code="invalid_command", message=e["msg"])
                    for e in error.errors(include_input=False, include_url=False)][:20]
        return Outcome(QuestionnaireMappingAnswer(command_id=None, action=None, outcome="refused",
                                                  problems=problems), imported)

    def answer(outcome: str, mappings: list[ImportedQuestionnaire], problems: list[Problem] | None = None,
               ) -> QuestionnaireMappingAnswer:
        return QuestionnaireMappingAnswer.model_validate({
            "command_id": command.command_id, "action": command.action, "outcome": outcome,
            "mappings": [shown(i) for i in mappings], "problems": problems or []})

    if command.action == "list":
        return Outcome(answer("listed", imported), imported)
    if command.action == "remove":
        gone = [i for i in imported if i.mapping_id == command.mapping_id]
        if command.mapping_id is None or not gone:
            return Outcome(answer("not_found", [], [Problem(
                field="mapping_id", code="not_found", message="this tenant has no questionnaire mapping by that id",
                expected="an id from the tenant's list of mappings")]), imported)
        return Outcome(answer("removed", gone), [i for i in imported if i.mapping_id != command.mapping_id],
                       removed=command.mapping_id)
    if command.questionnaire is None:
        return Outcome(answer("refused", [], [Problem(field="questionnaire", code="missing_field",
                                                      message="a store command carries no Questionnaire",
                                                      expected="a FHIR R4 Questionnaire")]), imported)
    form = read_questionnaire(command.questionnaire, registry, command.instrument)
    if isinstance(form, list):
        return Outcome(answer("refused", [], form), imported)
    form = replace(form, source=f"imported Questionnaire (admin API, by {command.by})")
    stored = ImportedQuestionnaire(questionnaire_key(form.canonical, form.version), form, now)
    kept = [i for i in imported if i.mapping_id != stored.mapping_id]
    after = sorted([*kept, stored], key=lambda i: (i.form.canonical, i.form.version or ""))
    return Outcome(answer("replaced" if len(kept) < len(imported) else "imported", [stored]), after, stored=form)


def shown(imported: ImportedQuestionnaire) -> MappingShown:
    form = imported.form
    return MappingShown(mapping_id=imported.mapping_id, canonical=form.canonical, version=form.version,
                        instrument=form.instrument, link_ids=dict(form.link_ids),
                        weights={k: dict(v) for k, v in form.weights.items()}, imported_at=imported.imported_at)
