"""What the engine remembers of an episode: constant in size however long the episode runs.

Per series (an alliance total or subscale, or an outcome total): how many sessions, the previous
value, and a running mean and variance (Welford) of the earlier values. Per open rupture: the level
to come back to and how many sessions have passed. Open alerts are known by their key."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.alert import Alert, AlertKind


class Running(BaseModel):
    """Welford's running mean and variance."""

    model_config = ConfigDict(frozen=True)

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> Running:
        n = self.n + 1
        delta = x - self.mean
        mean = self.mean + delta / n
        return Running(n=n, mean=mean, m2=self.m2 + delta * (x - mean))

    @property
    def sd(self) -> float | None:
        """Sample standard deviation (n - 1), as statistics.stdev."""
        return math.sqrt(self.m2 / (self.n - 1)) if self.n >= 2 else None


class Series(BaseModel):
    model_config = ConfigDict(frozen=True)

    count: int = 0
    previous: float | None = None
    earlier: Running = Running()


class Rupture(BaseModel):
    model_config = ConfigDict(frozen=True)

    level_to_regain: float
    sessions_since: int = 0
    escalated: bool = False


class EpisodeState(BaseModel):
    schema_version: int = 1
    latest_at: datetime
    series: dict[str, Series] = Field(default_factory=dict)  # "<instrument>" or "<instrument>:<subscale>"
    ruptures: dict[str, Rupture] = Field(default_factory=dict)


@dataclass(frozen=True, order=True)
class AlertKey:
    """At most one open alert per episode, kind, instrument and subscale."""

    kind: AlertKind
    instrument: str
    subscale: str | None

    @classmethod
    def of(cls, alert: Alert) -> AlertKey:
        return cls(alert.kind, alert.instrument, alert.subscale)


def series_name(instrument: str, subscale: str | None) -> str:
    return f"{instrument}:{subscale}" if subscale else instrument
