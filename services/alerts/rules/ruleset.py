"""The alert rules' parameters, read from rules.toml: each with its sources and confidence."""

from __future__ import annotations

import math
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from rapport.shared.contracts.alert import Severity

RULES_FILE = Path(__file__).with_name("rules.toml")
Confidence = Literal["verified", "secondary", "unverified", "proposal", "tenant"]  # tenant: its own policy
T = TypeVar("T")


class Parameter(BaseModel, Generic[T]):
    """One rule parameter: its value and where it came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: T
    source: list[str]
    confidence: Confidence
    note: str


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    version: str
    source: list[str]
    confidence: Confidence
    note: str


class CriticalSeverity(BaseModel):
    """A finding at or above the item's higher-risk level (or on an ungraded item), and one below it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    higher_risk: Severity
    lower_risk: Severity


class CriticalItem(Rule):
    severity: CriticalSeverity
    prompt: str


class RuptureSeverity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    drop: Severity
    below_cutoff: Severity
    minor: Severity
    major: Severity
    unrepaired: Severity


class RepairPrompts(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    goal: str
    task: str
    bond: str
    total: str

    def for_part(self, part: str | None) -> str:
        """The prompt for the part of the alliance that dropped; the general one when none is known."""
        return {"goal": self.goal, "task": self.task, "bond": self.bond}.get(part or "", self.total)


class ReliableDrop(BaseModel):
    """A series' SD and reliability, from which Jacobson & Truax give the drop that is beyond its error."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sd: float = Field(gt=0)
    reliability: float = Field(gt=0, lt=1)

    def points(self) -> float:
        """1.96 * SD * sqrt(2 * (1 - r)): the smallest drop that is reliable at 95% (R80)."""
        return 1.96 * self.sd * math.sqrt(2 * (1 - self.reliability))


class RuptureParameters(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    drop_points: Parameter[dict[str, float]]
    reliable_drop: Parameter[dict[str, ReliableDrop]]
    min_earlier_sessions: Parameter[int]
    z_minor: Parameter[float]
    z_major: Parameter[float]
    between_person_sd: Parameter[dict[str, float]]
    sd_floor_points: Parameter[float]
    sd_floor_series: Parameter[dict[str, float]]
    repair_within_sessions: Parameter[int]
    item_parts: Parameter[dict[str, dict[str, str]]]


class AllianceRupture(Rule):
    severity: RuptureSeverity
    prompts: RepairPrompts
    parameters: RuptureParameters

    def drop_points(self, series: str) -> float | None:
        """The drop that counts for a series ('srs', 'waisr:bond'): a published (or the tenant's) figure for the
        series or its instrument, else the Jacobson & Truax drop from the series' sourced SD and reliability;
        None when neither is known (no drop is invented)."""
        own = self.parameters.drop_points.value
        instrument = series.split(":", 1)[0]
        if series in own or instrument in own:
            return own.get(series, own.get(instrument))
        reliable = self.parameters.reliable_drop.value.get(series)
        return round(reliable.points(), 2) if reliable is not None else None

    def sd_floor(self, series: str) -> float:
        """The smallest SD a series' z is read with: its own floor, its instrument's, else the general one."""
        own = self.parameters.sd_floor_series.value
        return own.get(series, own.get(series.split(":", 1)[0], self.parameters.sd_floor_points.value))

    def sd_for(self, series: str, own_sd: float | None) -> float:
        """The SD a person-relative z is read with: the stricter (larger) of the client's own and the series'
        sourced between-person SD (Gumz et al. 2012, R83), never below the series' floor."""
        between = self.parameters.between_person_sd.value.get(series, 0.0)
        return max(own_sd or 0.0, between, self.sd_floor(series))

    def item_parts(self, instrument: str) -> dict[int, str]:
        return {int(item): part for item, part in self.parameters.item_parts.value.get(instrument, {}).items()}


class DeteriorationSeverity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    deteriorated: Severity
    sudden_loss: Severity


class DeteriorationParameters(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sudden_loss_fraction: Parameter[float]
    sudden_loss_first_interval: Parameter[bool]


class ReliableDeterioration(Rule):
    severity: DeteriorationSeverity
    prompt: str
    parameters: DeteriorationParameters


class NotOnTrackSeverity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    at_risk: Severity
    stalled: Severity


class NotOnTrackParameters(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    at_risk_session: Parameter[int]
    stalled_session: Parameter[int]


class NotOnTrack(Rule):
    severity: NotOnTrackSeverity
    prompt: str
    parameters: NotOnTrackParameters


class TrajectoryParameters(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    percentile: Parameter[float]
    min_episodes: Parameter[int]
    max_session: Parameter[int]


class ExpectedTrajectoryRule(Rule):
    severity: Severity
    prompt: str
    parameters: TrajectoryParameters


class DisengagementSeverity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    combined: Severity
    consecutive: Severity
    gap: Severity


class DisengagementParameters(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    late_cancellation_hours: Parameter[float]
    window_days: Parameter[float]
    consecutive_missed: Parameter[int]
    gap_days: Parameter[float]
    unplanned_after_days: Parameter[float]
    counted_cancellers: Parameter[list[str]]
    never_counted_reasons: Parameter[list[str]]


class Disengagement(Rule):
    severity: DisengagementSeverity
    prompt: str
    combined_prompt: str
    parameters: DisengagementParameters


class AppliedPolicy(BaseModel):
    """What the rules consult of a tenant's policy beyond their own parameters (RuleSet.policy)."""

    model_config = ConfigDict(frozen=True)

    version: int = Field(default=0, description="0: no policy set, the sourced defaults")
    off: frozenset[tuple[str, str]] = Field(default_factory=frozenset,
                                            description="(rule, instrument) turned off; instrument '*': the tenant")
    caseness: dict[str, float] = Field(default_factory=dict, description="instrument -> the tenant's cutoff")
    concern_cutoff: dict[str, float] = Field(default_factory=dict, description="instrument -> the tenant's cutoff")

    def runs(self, rule: str, instrument: str | None = None) -> bool:
        return (rule, "*") not in self.off and (instrument is None or (rule, instrument) not in self.off)


class RuleSet(BaseModel):
    """All rules, as loaded from rules.toml. Frozen: one instance is shared by every evaluation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    names: dict[str, str] = Field(default_factory=dict)
    critical_item: CriticalItem
    alliance_rupture: AllianceRupture
    reliable_deterioration: ReliableDeterioration
    not_on_track: NotOnTrack
    expected_trajectory: ExpectedTrajectoryRule
    priority: Rule
    disengagement: Disengagement
    policy: AppliedPolicy = Field(default_factory=lambda: AppliedPolicy(),
                                  description="the tenant's clinical policy these rules run under (rules/policy.py)")

    def runs(self, rule: str, instrument: str | None = None) -> bool:
        """Whether `rule` runs (on `instrument`) under the tenant's policy."""
        return self.policy.runs(rule, instrument)

    def name(self, instrument: str) -> str:
        """An instrument as a therapist knows it: 'PHQ-9', not 'phq9'."""
        return self.names.get(instrument, instrument.upper())


@lru_cache(maxsize=4)
def load_ruleset(path: Path = RULES_FILE) -> RuleSet:
    with path.open("rb") as f:
        return RuleSet.model_validate(tomllib.load(f))
