"""What the engine remembers of an episode: constant in size however long the episode runs.

Per series (an outcome total, an alliance total, an alliance subscale such as 'waisr:bond', or an
alliance part read from mapped items such as 'srs:bond'): how many scores, the first (baseline) and
the previous value, and Welford's running count, mean and M2 of all values so far. Per open rupture
alert: the level that counts as repaired and how many sessions have passed. Per open possible sudden
loss: the pre-loss score. The episode: how many sessions (distinct administration days) and when the
latest score was administered. The episode's attendance summary, when the alerts service has seen its
appointments (NO_SCORE_YET as latest_at for an episode known only by its appointments).

The open alerts themselves are not kept here: the service stores them, clinicians change them by
command without touching this state, and `evaluate` receives the open ones. Bookkeeping for an alert
that is no longer open (resolved by hand) is dropped at the next evaluation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rapport.shared.contracts.alert import Alert, AlertKind
from rapport.shared.contracts.attendance import AttendanceSummary
from rapport.shared.contracts.score import InstrumentKind

SCHEMA_VERSION = 2
NO_SCORE_YET = datetime(1900, 1, 1, tzinfo=UTC)  # latest_at of an episode known only by its appointments


class Running(BaseModel):
    """Welford's running count, mean and sum of squared deviations (M2)."""

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
        """Sample standard deviation (n - 1), as statistics.stdev; None below two values."""
        return math.sqrt(max(self.m2, 0.0) / (self.n - 1)) if self.n >= 2 else None


class Series(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: InstrumentKind = "outcome"
    count: int = 0
    baseline: float | None = None
    previous: float | None = None
    running: Running = Running()

    def add(self, value: float, kind: InstrumentKind) -> Series:
        baseline = value if self.baseline is None else self.baseline
        return Series(kind=kind, count=self.count + 1, baseline=baseline, previous=value,
                      running=self.running.add(value))

    def mean_before_previous(self) -> float | None:
        """The mean of the values before the latest one (the running stats include it)."""
        n = self.running.n
        if n < 2 or self.previous is None:
            return None
        return (n * self.running.mean - self.previous) / (n - 1)


class Rupture(BaseModel):
    """Follow-up of one open rupture alert, by series."""

    model_config = ConfigDict(frozen=True)

    opened_by: str = Field(description="the submission that opened the rupture")
    level_to_regain: float
    # the parts (WAI-SR goal, task, bond) that dropped with it and the level each must regain (rule v3)
    parts_to_regain: dict[str, float] = Field(default_factory=dict)
    sessions_since: int = 0
    escalated: bool = False
    # the alliance was back (a score cleared the rupture) while the client had missed sessions since last
    # attending: it counts as repaired once they attend again (rules/attendance.py)
    repair_held: bool = False


class SuddenLoss(BaseModel):
    """A possible sudden loss on an open reliable_deterioration alert, by instrument."""

    model_config = ConfigDict(frozen=True)

    submission_id: str
    pre_loss: float
    reliable_change: float


class EpisodeState(BaseModel):
    """Serialise with model_dump(mode='json'); older documents are upgraded on validation."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = SCHEMA_VERSION
    latest_at: datetime
    sessions: int = 0
    last_session_day: date | None = None
    series: dict[str, Series] = Field(default_factory=dict)
    ruptures: dict[str, Rupture] = Field(default_factory=dict)
    sudden_losses: dict[str, SuddenLoss] = Field(default_factory=dict)
    attendance: AttendanceSummary | None = Field(default=None, description="kept by rules/attendance.py")

    @property
    def attendance_pending(self) -> bool:
        """The client has missed sessions since last attending: no rupture counts as repaired yet."""
        return self.attendance is not None and self.attendance.missed_in_a_row > 0

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, document: Any) -> Any:
        """Schema 1 (no session count, series with `earlier` stats) -> 2."""
        if not isinstance(document, dict) or document.get("schema_version", SCHEMA_VERSION) >= SCHEMA_VERSION:
            return document
        upgraded = dict(document)
        series = {}
        for name, old in (document.get("series") or {}).items():
            series[name] = {"count": old.get("count", 0), "previous": old.get("previous"),
                            "running": old.get("earlier", {}),
                            "kind": "alliance" if ":" in name else "outcome"}
        upgraded["series"] = series
        upgraded["ruptures"] = {
            name: {"opened_by": "", **rupture} for name, rupture in (document.get("ruptures") or {}).items()
        }
        upgraded["sessions"] = max((s["count"] for s in series.values()), default=0)
        upgraded["schema_version"] = SCHEMA_VERSION
        return upgraded

    def series_of(self, name: str) -> Series:
        return self.series.get(name, Series())


@dataclass(frozen=True, order=True)
class AlertKey:
    """At most one open (open or acknowledged) alert per episode, kind, instrument and subscale."""

    kind: AlertKind
    instrument: str
    subscale: str | None

    @classmethod
    def of(cls, alert: Alert) -> AlertKey:
        return cls(alert.kind, alert.instrument, alert.subscale)

    @property
    def series(self) -> str:
        return series_name(self.instrument, self.subscale)


def series_name(instrument: str, part: str | None) -> str:
    return f"{instrument}:{part}" if part else instrument
