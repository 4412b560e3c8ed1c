"""A tenant's clinical policy: which rules run for which instruments, and their thresholds. Pure.

Clinics differ: an NHS Talking Therapies service counts GAD-7 caseness from 8, a US clinic from 10 (the
developers' cutoff, Spitzer et al. 2006); a PCOMS-only clinic runs SRS and ORS and no expected-trajectory
fit. A policy is what one clinic signed off, on top of the sourced defaults (rules.toml and the instrument
registry), which stand wherever the policy says nothing.

    PolicyValues      what a clinic writes (`rapport policy set --file policy.toml|json`)
    check(values)     -> [PolicyProblem]: each problem names the rule, instrument and field and what is allowed
    ClinicalPolicy    the values as stored: tenant, version (only ever increases), who signed it off and when
    applied(rules, p) -> RuleSet: the rules under the policy (RuleSet.policy says what is off, the cutoffs)
    effective(...)    -> [EffectiveValue]: every value the rules read, with its source (`rapport policy show`)

What the rules read, and so what a policy can set (POLICY_FIELDS):
- per rule, for the whole tenant: `enabled`, and the rule's numeric parameters named in RULE_FIELDS;
- per instrument and rule: `enabled`, and the thresholds the rule reads for that instrument:
  not_on_track reads the caseness cutoff (is the client still in the clinical range?), alliance_rupture the
  concern cutoff and the drop that counts. The reliable-change value is not a clinic's choice (it follows
  from the measure's reliability) and stays in the registry, as scoring applies it.
Two rules cannot be turned off: critical_item (a risk item always alerts; a clinic that uses no instrument
with one never sees it) and disengagement (turning it off is not built; its thresholds can be set)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from rapport.services.alerts.rules.ruleset import AllianceRupture, AppliedPolicy, Parameter, RuleSet, load_ruleset
from rapport.shared.contracts.tenancy import TenantId
from rapport.shared.instruments import Instrument, Registry

Value = bool | int | float
RULES = ("critical_item", "alliance_rupture", "reliable_deterioration", "not_on_track", "expected_trajectory",
         "priority", "disengagement")
PER_INSTRUMENT = ("critical_item", "alliance_rupture", "reliable_deterioration", "not_on_track",
                  "expected_trajectory")
ALWAYS_ON = {
    "critical_item": "a risk item always alerts (a clinic that uses no instrument with one never sees it)",
    "disengagement": "turning the attendance rule off is not built; set its thresholds instead",
}


@dataclass(frozen=True)
class FieldSpec:
    """One value a policy may set: its type and the allowed range (inclusive; `above`: strictly greater)."""

    kind: Literal["bool", "int", "float"]
    meaning: str
    low: float | None = None
    high: float | None = None
    above: float | None = None

    def allowed(self) -> str:
        if self.kind == "bool":
            return "true or false"
        whole = "a whole number" if self.kind == "int" else "a number"
        if self.above is not None:
            return f"{whole} above {self.above:g}" + (f" up to {self.high:g}" if self.high is not None else "")
        return f"{whole} from {self.low:g} to {self.high:g}"

    def admits(self, value: object) -> bool:
        if self.kind == "bool":
            return isinstance(value, bool)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return False
        if self.kind == "int" and value != int(value):
            return False
        if self.above is not None and not value > self.above:
            return False
        if self.low is not None and value < self.low:
            return False
        return self.high is None or value <= self.high


ENABLED = FieldSpec("bool", "whether the rule runs")
RULE_FIELDS: dict[str, dict[str, FieldSpec]] = {
    "critical_item": {"enabled": ENABLED},
    "alliance_rupture": {
        "enabled": ENABLED,
        "min_earlier_sessions": FieldSpec("int", "earlier scores before the person-relative z is read", 2, 20),
        "z_minor": FieldSpec("float", "z at or below which a drop is a minor rupture", -4, -0.5),
        "z_major": FieldSpec("float", "z at or below which a drop is a major rupture", -6, -1),
        "sd_floor_points": FieldSpec("float", "the smallest SD the z is read with", high=20, above=0),
        "repair_within_sessions": FieldSpec("int", "further sessions allowed for repair before escalating", 1, 20),
    },
    "reliable_deterioration": {
        "enabled": ENABLED,
        "sudden_loss_fraction": FieldSpec("float", "a sudden loss is at least this share of the pre-loss score",
                                          high=1, above=0),
        "sudden_loss_first_interval": FieldSpec("bool", "whether session 1 to 2 can be a sudden loss"),
    },
    "not_on_track": {
        "enabled": ENABLED,
        "at_risk_session": FieldSpec("int", "the session by which no reliable improvement is 'at risk'", 2, 52),
        "stalled_session": FieldSpec("int", "the session by which no reliable improvement is 'stalled'", 2, 52),
    },
    "expected_trajectory": {"enabled": ENABLED},
    "priority": {"enabled": ENABLED},
    "disengagement": {
        "enabled": ENABLED,
        "late_cancellation_hours": FieldSpec("float", "a cancellation later than this before the start is missed",
                                             high=24 * 14, above=0),
        "window_days": FieldSpec("float", "a missed session this soon after an alliance drop is the combined signal",
                                 high=365, above=0),
        "consecutive_missed": FieldSpec("int", "missed sessions in a row that raise the alert", 1, 20),
        "gap_days": FieldSpec("float", "days without an attended session while sessions are expected",
                              high=365, above=0),
        "unplanned_after_days": FieldSpec("float", "days after which a client who stopped coming has ended unplanned",
                                          high=730, above=0),
    },
}
# per instrument: the thresholds a rule reads for it; ranges come from the instrument (see instrument_fields)
INSTRUMENT_FIELDS: dict[str, tuple[str, ...]] = {
    "critical_item": ("enabled",),
    "alliance_rupture": ("enabled", "concern_cutoff", "drop_points"),
    "reliable_deterioration": ("enabled",),
    "not_on_track": ("enabled", "caseness"),
    "expected_trajectory": ("enabled",),
}


def instrument_fields(rule: str, instrument: Instrument) -> dict[str, FieldSpec]:
    """What a policy may set for `rule` on `instrument`, with the instrument's own range."""
    low, high = instrument.total_range
    fields = {"enabled": ENABLED}
    if rule == "not_on_track" and instrument.caseness is not None:
        fields["caseness"] = FieldSpec("float", f"{instrument.id} caseness cutoff: the clinical range "
                                       + ("at or above it" if instrument.better == "lower" else "below it"), low, high)
    if rule == "alliance_rupture" and instrument.concern_cutoff is not None:
        fields["concern_cutoff"] = FieldSpec("float", f"{instrument.id} total below which the alliance is of "
                                             "concern", low, high)
    if rule == "alliance_rupture":
        fields["drop_points"] = FieldSpec("float", f"points down from the previous {instrument.id} that count as a "
                                          "drop", high=high - low, above=0)
    return fields


def can_run(rule: str, instrument: Instrument) -> str | None:
    """None when `rule` can run on `instrument`, else why not (in clinic words)."""
    if rule == "critical_item" and not instrument.critical_items:
        return f"{instrument.id} has no critical (risk) item"
    if rule == "alliance_rupture" and instrument.kind != "alliance":
        return f"{instrument.id} is not an alliance measure"
    if rule in ("reliable_deterioration", "not_on_track") and not instrument.runs_change_rules:
        return (f"{instrument.id} is a screener" if instrument.screener else
                f"{instrument.id} is not an outcome measure" if instrument.kind != "outcome" else
                f"{instrument.id} has no reliable-change value in the registry")
    if rule == "expected_trajectory" and not instrument.runs_trajectory_rule:
        return f"{instrument.id} is a screener" if instrument.screener else f"{instrument.id} is not an outcome measure"
    return None


class PolicyValues(BaseModel):
    """What a clinic writes: `[rules.<rule>]` field = value, `[instruments.<instrument>.<rule>]` field = value.

    Anything not named keeps its sourced default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    note: str | None = Field(default=None, max_length=2000, description="why the clinic chose these values")
    # values are checked by `check` (type and range, with the field named), not coerced here: "no" is not false
    rules: dict[str, dict[str, Any]] = Field(default_factory=dict)
    instruments: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)


class ClinicalPolicy(BaseModel):
    """A tenant's policy as stored: versions only ever increase, and each was signed off by someone."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: TenantId
    version: int = Field(ge=1)
    signed_off_by: str = Field(min_length=1, max_length=128)
    signed_off_at: AwareDatetime
    values: PolicyValues


@dataclass(frozen=True)
class PolicyProblem:
    where: str  # "rules.not_on_track.at_risk_session", "instruments.gad7.not_on_track.caseness"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def check(values: PolicyValues, registry: Registry) -> list[PolicyProblem]:
    """Every way `values` cannot be applied: an unknown rule, instrument or field, a value outside its
    range, a rule on an instrument it cannot use, a rule that cannot be turned off."""
    problems: list[PolicyProblem] = []
    for rule, fields in sorted(values.rules.items()):
        if rule not in RULE_FIELDS:
            problems.append(PolicyProblem(f"rules.{rule}", f"no such rule (rules: {', '.join(RULES)})"))
            continue
        problems += _fields(f"rules.{rule}", rule, fields, RULE_FIELDS[rule])
    for instrument_id, by_rule in sorted(values.instruments.items()):
        instrument = registry.get(instrument_id)
        if instrument is None:
            problems.append(PolicyProblem(f"instruments.{instrument_id}", "no such instrument in the registry "
                                          f"({', '.join(sorted(i.id for i in registry))})"))
            continue
        for rule, fields in sorted(by_rule.items()):
            where = f"instruments.{instrument_id}.{rule}"
            if rule not in INSTRUMENT_FIELDS:
                problems.append(PolicyProblem(where, f"no per-instrument rule {rule!r} (per instrument: "
                                              f"{', '.join(PER_INSTRUMENT)})"))
                continue
            if (why := can_run(rule, instrument)) is not None:
                problems.append(PolicyProblem(where, f"{rule} cannot run on {instrument_id}: {why}"))
                continue
            allowed = instrument_fields(rule, instrument)
            for name in fields:
                if name in INSTRUMENT_FIELDS[rule] and name not in allowed:
                    problems.append(PolicyProblem(f"{where}.{name}", f"{instrument_id} has no {name} to set"))
            problems += _fields(where, rule, {k: v for k, v in fields.items()
                                              if k in allowed or k not in INSTRUMENT_FIELDS[rule]}, allowed)
    problems += _orders(values)
    return problems


def _fields(where: str, rule: str, fields: Mapping[str, Value], allowed: Mapping[str, FieldSpec]
            ) -> list[PolicyProblem]:
    problems = []
    for name, value in sorted(fields.items()):
        spec = allowed.get(name)
        if spec is None:
            problems.append(PolicyProblem(f"{where}.{name}", f"{rule} has no {name} to set here "
                                          f"(fields: {', '.join(allowed)})"))
        elif not spec.admits(value):
            problems.append(PolicyProblem(f"{where}.{name}", f"{value!r} is outside the allowed range: "
                                          f"{spec.allowed()} ({spec.meaning})"))
        elif name == "enabled" and value is False and rule in ALWAYS_ON:
            problems.append(PolicyProblem(f"{where}.{name}", f"{rule} cannot be turned off: {ALWAYS_ON[rule]}"))
    return problems


def _orders(values: PolicyValues) -> list[PolicyProblem]:
    """Values that are each in range but contradict each other (or the defaults they meet)."""
    defaults = _defaults()
    problems = []
    pairs = (("not_on_track", "at_risk_session", "stalled_session", "the 'at risk' checkpoint comes before 'stalled'"),
             ("alliance_rupture", "z_major", "z_minor", "a major rupture is further below the mean than a minor one"))
    for rule, lower, upper, why in pairs:
        own = values.rules.get(rule, {})
        if lower not in own and upper not in own:
            continue
        low, high = own.get(lower, defaults[rule][lower]), own.get(upper, defaults[rule][upper])
        if isinstance(low, int | float) and isinstance(high, int | float) and low > high:
            problems.append(PolicyProblem(f"rules.{rule}.{lower if lower in own else upper}",
                                          f"{lower} {low:g} is above {upper} {high:g}: {why}"))
    return problems


def _defaults() -> dict[str, dict[str, float]]:
    rules = load_ruleset()
    return {"not_on_track": {n: getattr(rules.not_on_track.parameters, n).value
                             for n in ("at_risk_session", "stalled_session")},
            "alliance_rupture": {n: getattr(rules.alliance_rupture.parameters, n).value
                                 for n in ("z_minor", "z_major")}}


def applied(rules: RuleSet, policy: ClinicalPolicy | None) -> RuleSet:
    """The rules under `policy`: its values in place of the defaults, each marked as the tenant's own.
    The policy must have passed `check`."""
    if policy is None:
        return rules
    note = f"the tenant's own value (clinical policy v{policy.version}, signed off {policy.signed_off_at:%Y-%m-%d})"
    values = policy.values
    off: set[tuple[str, str]] = set()
    updates: dict[str, Any] = {}
    for rule_id, fields in values.rules.items():
        if fields.get("enabled") is False:
            off.add((rule_id, "*"))
        numbers = {k: v for k, v in fields.items() if k != "enabled"}
        if numbers:
            updates[rule_id] = _with_parameters(getattr(rules, rule_id), numbers, note)
    drops: dict[str, float] = {}
    caseness: dict[str, float] = {}
    concern: dict[str, float] = {}
    for instrument, by_rule in values.instruments.items():
        for rule_id, fields in by_rule.items():
            if fields.get("enabled") is False:
                off.add((rule_id, instrument))
            if "caseness" in fields:
                caseness[instrument] = float(fields["caseness"])
            if "concern_cutoff" in fields:
                concern[instrument] = float(fields["concern_cutoff"])
            if "drop_points" in fields:
                drops[instrument] = float(fields["drop_points"])
    if drops:
        rupture: AllianceRupture = updates.get("alliance_rupture", rules.alliance_rupture)
        current = rupture.parameters.drop_points
        updates["alliance_rupture"] = _with_parameters(rupture, {"drop_points": {**current.value, **drops}}, note)
    policy_now = AppliedPolicy(version=policy.version, off=frozenset(off), caseness=caseness, concern_cutoff=concern)
    return rules.model_copy(update={**updates, "policy": policy_now})


def _with_parameters(rule: Any, values: Mapping[str, object], note: str) -> Any:
    """The rule (a rules.toml model with `parameters`) with these parameters the tenant's own."""
    parameters = rule.parameters
    changed = {}
    for name, value in values.items():
        current: Parameter[object] = getattr(parameters, name)
        kind = type(current.value)
        cast_value = int(value) if kind is int and isinstance(value, int | float) else value
        if kind is float and isinstance(value, int):
            cast_value = float(value)
        changed[name] = current.model_copy(update={"value": cast_value, "source": [], "confidence": "tenant",
                                                   "note": note})
    return rule.model_copy(update={"parameters": parameters.model_copy(update=changed)})


# --- what `rapport policy show` prints --------------------------------------------------------------


class EffectiveValue(BaseModel):
    model_config = ConfigDict(frozen=True)

    rule: str
    instrument: str | None = None
    field: str
    value: Value | dict[str, float] | None = Field(description="None: the rule reads no such value here")
    origin: Literal["tenant", "default"]
    sources: list[str] = Field(default_factory=list)
    confidence: str
    note: str | None = None


class EffectivePolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    tenant: str
    version: int = Field(description="0: no policy set, the sourced defaults")
    signed_off_by: str | None = None
    signed_off_at: datetime | None = None
    note: str | None = None
    values: list[EffectiveValue]
    runs: dict[str, list[str]] = Field(description="instrument -> the rules that run on it under this policy")
    not_run: dict[str, dict[str, str]] = Field(description="instrument -> rule -> why it does not run")


def effective(tenant: str, policy: ClinicalPolicy | None, rules: RuleSet, registry: Registry) -> EffectivePolicy:
    """Every value the rules read for `tenant`, each with where it comes from."""
    values = policy.values if policy is not None else PolicyValues()
    under = applied(rules, policy)
    found: list[EffectiveValue] = []
    for rule_id in RULES:
        rule = getattr(under, rule_id)
        own = values.rules.get(rule_id, {})
        found.append(EffectiveValue(rule=rule_id, field="enabled", value=under.policy.runs(rule_id),
                                    origin="tenant" if "enabled" in own else "default",
                                    sources=list(rule.source), confidence=rule.confidence,
                                    note=f"rule {rule_id} v{rule.version}"))
        for name in RULE_FIELDS[rule_id]:
            if name == "enabled":
                continue
            parameter: Parameter[Value] = getattr(rule.parameters, name)
            found.append(EffectiveValue(rule=rule_id, field=name, value=parameter.value,
                                        origin="tenant" if name in own else "default", sources=list(parameter.source),
                                        confidence=parameter.confidence, note=parameter.note))
    runs: dict[str, list[str]] = {}
    not_run: dict[str, dict[str, str]] = {}
    for instrument in sorted(registry, key=lambda i: i.id):
        own_by_rule = values.instruments.get(instrument.id, {})
        for rule_id in PER_INSTRUMENT:
            why = can_run(rule_id, instrument)
            if why is None and not under.policy.runs(rule_id, instrument.id):
                why = "turned off by the tenant's policy"
            if why is not None:
                not_run.setdefault(instrument.id, {})[rule_id] = why
                continue
            runs.setdefault(instrument.id, []).append(rule_id)
            own = own_by_rule.get(rule_id, {})
            found += _instrument_values(rule_id, instrument, own, under)
    return EffectivePolicy(
        tenant=tenant, version=policy.version if policy else 0,
        signed_off_by=policy.signed_off_by if policy else None,
        signed_off_at=policy.signed_off_at if policy else None, note=values.note, values=found,
        runs=runs, not_run=not_run)


def _instrument_values(rule_id: str, instrument: Instrument, own: Mapping[str, Value], under: RuleSet
                       ) -> list[EffectiveValue]:
    found = []
    registry_cutoffs = {"caseness": instrument.caseness, "concern_cutoff": instrument.concern_cutoff}
    tenant_cutoffs = {"caseness": under.policy.caseness, "concern_cutoff": under.policy.concern_cutoff}
    for name in instrument_fields(rule_id, instrument):
        if name == "enabled":
            continue
        origin: Literal["tenant", "default"] = "tenant" if name in own else "default"
        if name in registry_cutoffs:
            cutoff = registry_cutoffs[name]
            assert cutoff is not None
            tenant_value = tenant_cutoffs[name].get(instrument.id)
            found.append(EffectiveValue(
                rule=rule_id, instrument=instrument.id, field=name,
                value=tenant_value if tenant_value is not None else cutoff.value, origin=origin,
                sources=[] if origin == "tenant" else [f"{instrument.id}:{s}" for s in cutoff.source],
                confidence="tenant" if origin == "tenant" else cutoff.confidence,
                note=None if origin == "tenant" else cutoff.note))
        elif name == "drop_points":
            parameter = under.alliance_rupture.parameters.drop_points
            reliable = under.alliance_rupture.parameters.reliable_drop
            value = under.alliance_rupture.drop_points(instrument.id)
            used = parameter if instrument.id in parameter.value or origin == "tenant" else reliable
            if value is None:  # no published drop and no sourced SD and reliability: the z alone reads drops
                found.append(EffectiveValue(rule=rule_id, instrument=instrument.id, field=name, value=None,
                                            origin=origin, sources=list(reliable.source), confidence="unverified",
                                            note=f"no session-to-session drop for {instrument.id}: none published, "
                                                 "and no sourced SD and reliability to derive one (the "
                                                 "person-relative z still runs). " + reliable.note))
                continue
            found.append(EffectiveValue(rule=rule_id, instrument=instrument.id, field=name, value=value,
                                        origin=origin, sources=list(used.source), confidence=used.confidence,
                                        note=used.note))
    return found
