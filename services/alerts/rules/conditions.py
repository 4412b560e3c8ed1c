"""What a rule says about one score: the conditions that hold now, and those it positively cleared.

A rule (a `Check`) looks at the new score and the episode's state *before* it, and returns a
`Verdict`: findings (an alert key, a severity, the evidence, a prompt) and clearings (an alert key
and the resolution, e.g. 'repaired'). It knows nothing of the open alerts: the lifecycle in
`engine.py` turns findings into raised or updated alerts and clearings into resolutions. A new rule
is one more `Check` in `engine.CHECKS`; several rules may produce one alert kind (the checkpoint and
the expected-trajectory not_on_track rules), and findings for one key from several checks are merged."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from rapport.services.alerts.rules.ruleset import Rule, RuleSet
from rapport.services.alerts.rules.state import AlertKey, EpisodeState, Rupture, SuddenLoss
from rapport.shared.contracts.alert import Evidence, Resolution, Severity
from rapport.shared.contracts.score import ScoreComputed
from rapport.shared.instruments import Instrument, Registry, load_registry

if TYPE_CHECKING:
    from rapport.services.alerts.rules.trajectory import FittedTrajectory

SEVERITY_ORDER: list[Severity] = ["low", "medium", "high", "critical"]
RISK_UNCHECKED = "risk items could not be checked (total only, or the item missing)"


def worst(*severities: Severity) -> Severity:
    return max(severities, key=SEVERITY_ORDER.index)


@dataclass(frozen=True)
class Context:
    rules: RuleSet
    session: int  # this score's session number in the episode
    trajectories: Mapping[str, FittedTrajectory] = field(default_factory=dict)  # by instrument, for the tenant
    instruments: Registry = field(default_factory=load_registry)  # what each instrument is for, its grading

    def instrument(self, instrument_id: str) -> Instrument | None:
        return self.instruments.get(instrument_id)

    def runs_change_rules(self, score: ScoreComputed) -> bool:
        """Reliable deterioration, sudden loss and the checkpoint need a reliable-change value (the one
        scoring used, in the score's change) and an instrument that is not a screener."""
        instrument = self.instrument(score.score.instrument)
        if (instrument is not None and instrument.screener) or score.change is None:
            return False
        return score.change.reliable_change_value is not None or number(score.parameters.get("reliable_change")) \
            is not None

    def caseness_cutoff(self, score: ScoreComputed) -> float | None:
        """The caseness cutoff the rules read: the tenant's own (its clinical policy), else the registry's that
        scoring applied (ScoreComputed.parameters['caseness_cutoff'])."""
        own = self.rules.policy.caseness.get(score.score.instrument)
        return own if own is not None else number(score.parameters.get("caseness_cutoff"))

    def in_clinical_range(self, score: ScoreComputed) -> bool | None:
        """Caseness under the tenant's cutoff (at or above it where lower is better, below it where higher is
        better: model.py); scoring's own decision where the tenant set none."""
        own = self.rules.policy.caseness.get(score.score.instrument)
        if own is None:
            return score.score.caseness
        return score.score.total >= own if score.score.better == "lower" else score.score.total < own

    def concern_cutoff(self, score: ScoreComputed) -> float | None:
        """The alliance concern cutoff: the tenant's own, else the registry's that scoring sent."""
        own = self.rules.policy.concern_cutoff.get(score.score.instrument)
        return own if own is not None else number(score.parameters.get("concern_cutoff"))

    def runs_trajectory_rule(self, score: ScoreComputed) -> bool:
        instrument = self.instrument(score.score.instrument)
        return instrument is None or instrument.runs_trajectory_rule


@dataclass(frozen=True)
class Finding:
    """A condition that holds now for one alert key."""

    key: AlertKey
    severity: Severity
    evidence: Evidence
    prompt: str | None
    rupture: Rupture | None = None  # kept while the rupture alert this opens is open
    sudden_loss: SuddenLoss | None = None  # kept while the deterioration alert is open


@dataclass(frozen=True)
class Clearing:
    """The rule positively says the condition for this key no longer holds."""

    key: AlertKey
    resolution: Resolution
    reason: str


@dataclass(frozen=True)
class Verdict:
    findings: Sequence[Finding] = ()
    clearings: Sequence[Clearing] = ()


class Check(Protocol):
    """One alert rule over one score and the episode's state before it. `rule`: its id in rules.toml, which
    the tenant's clinical policy turns off by."""

    rule: str

    def judge(self, score: ScoreComputed, before: EpisodeState, context: Context) -> Verdict: ...


def evidence(context: Context, rule: Rule, score: ScoreComputed, summary: str,
             values: Mapping[str, object]) -> Evidence:
    """The evidence of one finding; says so when the score's risk items could not be checked."""
    found = {k: v for k, v in values.items() if v is not None}
    found["instrument_name"] = context.rules.name(score.score.instrument)
    found["rule_confidence"] = rule.confidence
    if not score.score.risk_checked:
        summary = f"{summary} ({RISK_UNCHECKED})"
        found["risk_checked"] = False
    return Evidence(rule_id=rule.id, rule_version=rule.version, summary=summary, submission_id=score.submission_id,
                    administered_at=score.administered_at, instrument=score.score.instrument,
                    score=score.score.total, values=found, sources=list(rule.source),
                    policy_version=context.rules.policy.version)


def number(value: object) -> float | None:
    """A numeric parameter from ScoreComputed.parameters, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def points(value: float) -> str:
    """A score as a therapist reads it: 31, 7.5, 2.33."""
    return f"{round(value, 2):g}"
