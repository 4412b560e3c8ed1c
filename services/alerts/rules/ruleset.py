"""The alert rules' parameters, read from rules.toml."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

RULES_FILE = Path(__file__).with_name("rules.toml")
Confidence = Literal["verified", "secondary", "unverified", "proposal"]


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    version: str
    source: list[str]
    confidence: Confidence
    note: str


class AllianceRupture(Rule):
    min_earlier_sessions: int
    z_minor: float
    z_major: float
    repair_within_sessions: int
    drop_points: dict[str, float]


class ReliableDeterioration(Rule):
    sudden_loss_fraction: float


class NotOnTrack(Rule):
    at_risk_session: int
    stalled_session: int


class Prompts(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    goal: str
    task: str
    bond: str
    total: str
    not_on_track: str
    deterioration: str
    critical_item: str

    def for_part(self, part: str | None) -> str:
        return {"goal": self.goal, "task": self.task, "bond": self.bond}.get(part or "", self.total)


class RuleSet(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    critical_item: Rule
    alliance_rupture: AllianceRupture
    reliable_deterioration: ReliableDeterioration
    not_on_track: NotOnTrack
    prompts: Prompts


@lru_cache(maxsize=1)
def load_ruleset(path: Path = RULES_FILE) -> RuleSet:
    with path.open("rb") as f:
        return RuleSet.model_validate(tomllib.load(f))
