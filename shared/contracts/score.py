"""`rapport.<tenant>.score.computed`: the exact score of one submission and its change in the episode."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from rapport.shared.contracts.problems import Problem
from rapport.shared.contracts.tenancy import PseudonymousId, SubjectToken, TenantId

InstrumentKind = Literal["outcome", "alliance"]
Direction = Literal["lower", "higher"]
ReliableChange = Literal["improved", "deteriorated", "none"]
ClinicalChange = Literal["recovered", "improved", "unchanged", "deteriorated"]


class CriticalItemFinding(BaseModel):
    model_config = ConfigDict(frozen=True)

    item: int
    value: float
    threshold: float
    label: str = Field(description="what the item is about, in clinical words (no item wording)")


class Scored(BaseModel):
    """What the pure scoring function returns for one administration."""

    model_config = ConfigDict(frozen=True)

    instrument: str
    instrument_version: str
    kind: InstrumentKind
    better: Direction
    total: float
    total_min: float
    total_max: float
    band: str | None = None
    caseness: bool | None = Field(default=None, description="at or beyond the caseness cutoff, where one exists")
    subscales: dict[str, float] = Field(default_factory=dict)
    critical_items: list[CriticalItemFinding] = Field(default_factory=list)
    item_level: bool = True
    risk_checked: bool = Field(
        description="False when critical items could not be checked (total only, or item missing)"
    )
    missing_items: list[int] = Field(default_factory=list)
    prorated: bool = False
    warnings: list[Problem] = Field(default_factory=list)


class ChangeFromBaseline(BaseModel):
    """Change in the episode, against its first score (baseline) and the one before (previous)."""

    model_config = ConfigDict(frozen=True)

    baseline_total: float
    baseline_at: AwareDatetime
    previous_total: float | None = None
    change_from_baseline: float
    change_from_previous: float | None = None
    reliable_change_value: float | None = Field(default=None, description="points needed; None when unknown")
    reliable: ReliableChange = "none"
    clinical: ClinicalChange | None = Field(default=None, description="Jacobson & Truax class, where a cutoff exists")


class ScoreComputed(BaseModel):
    model_config = ConfigDict(frozen=True)

    tenant: TenantId
    submission_id: PseudonymousId
    revision: int = Field(ge=1)
    client_id: PseudonymousId
    episode_id: PseudonymousId
    episode_by: Literal["source", "gap_rule"] = Field(
        default="source", description="gap_rule: the submission named no episode; a new one starts after a gap "
                                      "(RAPPORT_EPISODE_GAP_DAYS) in the client's administrations")
    clinician_id: SubjectToken | None = None
    administered_at: AwareDatetime
    session_number: int | None = None
    score: Scored
    change: ChangeFromBaseline | None = Field(default=None, description="absent on the episode's first score")
    responses: dict[int, float | None] = Field(default_factory=dict)
    supersedes_revision: int | None = Field(default=None, description="set when an amendment replaces a score")
    re_placed_by: str | None = Field(
        default=None, description="set on a score re-sent because an earlier administration arrived late or was "
                                  "corrected (`<submission id>:<revision>` of that one), changing this score's "
                                  "baseline or previous score; same revision, new change")
    parameters: dict[str, str | float | None] = Field(
        default_factory=dict, description="the registry parameters used (cutoff, reliable change), with sources"
    )
    talking_therapies: dict[str, Any] | None = Field(
        default=None,
        description="NHS Talking Therapies outcomes of the episode so far (PHQ-9 with GAD-7, first against latest): "
                    "case_at_start, case_at_end, reliable_improvement, reliable_deterioration, recovered, "
                    "reliably_recovered; present once the episode has both measures",
    )
    fhir_observation: dict[str, Any] | None = Field(
        default=None,
        description="the total as a FHIR R4 Observation (LOINC-coded, derivedFrom the QuestionnaireResponse), "
                    "for instruments with a LOINC total-score code",
    )
