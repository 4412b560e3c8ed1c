"""A tenant's own Questionnaires (its questionnaire mappings), managed over the broker: the gateway's admin API
sends a command, ingest (the one owner of the mappings) carries it out and answers.

Inbound on `rapport.<tenant>.in.questionnaire-mappings`; answered on
`rapport.<tenant>.questionnaire-mapping.listed|stored|removed|rejected`, each answer naming the command.
The tenant is the subject's, never the payload's.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from rapport.shared.contracts.problems import Problem
from rapport.shared.contracts.tenancy import PseudonymousId

MAPPING_ID_PATTERN = r"^[0-9a-f]{64}$"  # a digest of the canonical and version, derived by ingest
MappingAction = Literal["list", "store", "remove"]
MappingOutcome = Literal["listed", "imported", "replaced", "removed", "not_found", "refused"]
# the verb of the answer's subject for each outcome
ANSWER_VERB: dict[str, str] = {"listed": "listed", "imported": "stored", "replaced": "stored", "removed": "removed",
                               "not_found": "rejected", "refused": "rejected"}


class QuestionnaireMappingCommand(BaseModel):
    """`list` the tenant's mappings; `store` a FHIR R4 Questionnaire as one (replacing the one with the same
    canonical and version); `remove` one by its id."""

    model_config = ConfigDict(extra="forbid")

    command_id: PseudonymousId
    action: MappingAction
    by: PseudonymousId
    questionnaire: dict[str, Any] | None = Field(default=None, description="store: the FHIR R4 Questionnaire")
    instrument: str | None = Field(default=None, max_length=32,
                                   description="store: the instrument, when the Questionnaire's code and url name none")
    mapping_id: str | None = Field(default=None, pattern=MAPPING_ID_PATTERN, description="remove: which one")


class MappingShown(BaseModel):
    """One stored mapping: which instrument, which linkId is which item, what each answer code weighs."""

    model_config = ConfigDict(frozen=True)

    mapping_id: str
    canonical: str
    version: str | None
    instrument: str
    link_ids: dict[str, int]
    weights: dict[str, dict[str, float]]
    imported_at: AwareDatetime


class QuestionnaireMappingAnswer(BaseModel):
    """What ingest did with one command. `mappings`: the tenant's mappings after it (`list`), or the one stored
    or removed; `problems`: why nothing was stored (`refused`) or what was not found."""

    model_config = ConfigDict(frozen=True)

    command_id: str | None
    action: MappingAction | None
    outcome: MappingOutcome
    mappings: list[MappingShown] = Field(default_factory=list)
    problems: list[Problem] = Field(default_factory=list)
