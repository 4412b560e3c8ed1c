"""What normalisation produces: a draft submission (or a rejection), finished by the registry checks."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.contracts.problems import Problem
from shared.contracts.submission import SourceFormat, Submission
from shared.instruments import Registry
from shared.instruments.validation import check_responses, check_total


@dataclass(frozen=True)
class Rejection:
    submission_id: str | None
    source_format: SourceFormat | None
    problems: list[Problem]

    @classmethod
    def of(cls, *problems: Problem, submission_id: str | None = None,
           source_format: SourceFormat | None = None) -> Rejection:
        return cls(submission_id=submission_id, source_format=source_format, problems=list(problems))


@dataclass(frozen=True)
class TenantMapping:
    """Per-tenant configuration clinic IT provides for its own conventions."""

    questionnaires: dict[str, str] = field(default_factory=dict)  # canonical or identifier -> instrument id
    link_ids: dict[str, dict[str, int]] = field(default_factory=dict)  # instrument -> {linkId: item number}


def finish(draft: Submission | Rejection, registry: Registry, licensed: frozenset[str]) -> Submission | Rejection:
    """The checks every form shares: known instrument, licence, responses or total in range."""
    if isinstance(draft, Rejection):
        return draft
    instrument = registry.get(draft.instrument)

    def reject(*problems: Problem) -> Rejection:
        return Rejection.of(*problems, submission_id=draft.submission_id, source_format=draft.source_format)

    if instrument is None:
        return reject(Problem(
            field="instrument", code="unknown_instrument", message=f"no instrument {draft.instrument!r}",
            expected="one of " + ", ".join(i.id for i in registry),
        ))
    if instrument.licence.status == "licensed" and instrument.id not in licensed:
        return reject(Problem(
            field="instrument", code="instrument_not_licensed",
            message=f"{instrument.id} is a licensed instrument this tenant has not enabled",
            expected="RAPPORT_LICENSED_INSTRUMENTS to list it for this tenant, with the holder's licence",
        ))
    if not draft.item_level:
        if draft.reported_total is None:
            return reject(Problem(field="total", code="missing_total", message="no total and no item responses",
                                  expected="responses for each item, or a total"))
        problems = check_total(instrument, draft.reported_total)
    else:
        problems = check_responses(instrument, draft.responses)
    return reject(*problems) if problems else draft
