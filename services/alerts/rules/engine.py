"""evaluate(state, score) -> new state and alert transitions. Pure: time comes in as `now`.

Each rule looks at the new score and the episode's compact state and says which conditions hold
now (one per alert key). The lifecycle then compares them with the open alerts: a new condition
raises an alert, a continuing one updates it with the new evidence, and a condition that cleared
resolves it (critical items stay open until a clinician resolves them; a rupture resolves only when
repaired, and is escalated once if it is not repaired in time)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.alerts.rules.ruleset import RuleSet
from services.alerts.rules.state import AlertKey, EpisodeState, Rupture, Series, series_name
from shared.contracts.alert import Alert, AlertCommand, AlertTransition, Evidence, Resolution, Severity
from shared.contracts.score import ScoreComputed

ENGINE = "rapport/alerts"
ALERT_NAMESPACE = uuid.UUID("b8a4f5de-2f55-4c39-9f0e-5d7f1c2a9e41")
EVIDENCE_KEPT = 10
SEVERITY_ORDER: list[Severity] = ["low", "medium", "high", "critical"]


@dataclass(frozen=True)
class Condition:
    key: AlertKey
    severity: Severity
    evidence: Evidence
    prompt: str | None


@dataclass(frozen=True)
class Evaluation:
    state: EpisodeState
    transitions: list[AlertTransition]
    risk_unchecked: bool = False


@dataclass(frozen=True)
class CommandRejected:
    reason: str


@dataclass
class Replayed:
    state: EpisodeState | None
    alerts: dict[str, Alert] = field(default_factory=dict)


def alert_id(score: ScoreComputed, key: AlertKey) -> str:
    """The same episode, key and opening submission give the same id on any replica or replay."""
    name = f"{score.tenant}|{score.client_id}|{score.episode_id}|{key.kind}|{key.instrument}|{key.subscale}|" \
           f"{score.submission_id}"
    return str(uuid.uuid5(ALERT_NAMESPACE, name))


def _evidence(rule_id: str, version: str, score: ScoreComputed, summary: str, sources: list[str],
              **values: object) -> Evidence:
    return Evidence(rule_id=rule_id, rule_version=version, summary=summary, submission_id=score.submission_id,
                    administered_at=score.administered_at, instrument=score.score.instrument,
                    score=score.score.total, values=values, sources=sources)


def _name(score: ScoreComputed) -> str:
    return score.score.instrument.upper().replace("PHQ", "PHQ-").replace("GAD", "GAD-").replace("--", "-")


# --- the rules -------------------------------------------------------------------------------


def critical_items(score: ScoreComputed, rules: RuleSet) -> list[Condition]:
    rule = rules.critical_item
    findings = score.score.critical_items
    if not findings:
        return []
    described = "; ".join(f"item {f.item} = {f.value:g} ({f.label})" for f in findings)
    evidence = _evidence(rule.id, rule.version, score, f"Risk item endorsed on {_name(score)}: {described}",
                         rule.source, items={str(f.item): f.value for f in findings},
                         thresholds={str(f.item): f.threshold for f in findings})
    return [Condition(AlertKey("critical_item", score.score.instrument, None), "critical", evidence,
                      rules.prompts.critical_item)]


def alliance(score: ScoreComputed, state: EpisodeState, rules: RuleSet) -> tuple[list[Condition], dict[str, str]]:
    """Rupture conditions per series, and which series were repaired (series -> summary)."""
    rule = rules.alliance_rupture
    conditions: list[Condition] = []
    repaired: dict[str, str] = {}
    cutoff = score.parameters.get("concern_cutoff")
    drop_points = rule.drop_points.get(score.score.instrument)
    parts: list[tuple[str | None, float]] = [(None, score.score.total), *score.score.subscales.items()]
    for part, value in parts:
        name = series_name(score.score.instrument, part)
        series = state.series.get(name, Series())
        label = f"{_name(score)}" + (f" {part}" if part else "")
        reasons: list[str] = []
        values: dict[str, object] = {"value": value, "previous": series.previous}
        severity: Severity = "medium"
        if part is None and isinstance(cutoff, int | float) and value < cutoff:
            reasons.append(f"below the concern cutoff {cutoff:g}")
            values["cutoff"] = cutoff
        if drop_points is not None and series.previous is not None and series.previous - value >= drop_points:
            reasons.append(f"down from {series.previous:g} last session")
            values["drop_points"] = drop_points
        sd = series.earlier.sd
        if series.earlier.n >= rule.min_earlier_sessions and sd:
            z = (value - series.earlier.mean) / sd
            values |= {"z": round(z, 2), "own_mean": round(series.earlier.mean, 2), "own_sd": round(sd, 2)}
            if z <= rule.z_major:
                reasons.append(f"{abs(z):.1f} SD below the client's own mean {series.earlier.mean:.1f}")
                severity = "high"
            elif z <= rule.z_minor:
                reasons.append(f"{abs(z):.1f} SD below the client's own mean {series.earlier.mean:.1f}")
        open_rupture = state.ruptures.get(name)
        if open_rupture is not None and value >= open_rupture.level_to_regain and not reasons:
            repaired[name] = f"{label} back to {value:g} (pre-rupture level {open_rupture.level_to_regain:g})"
            continue
        if not reasons:
            continue
        part_text = f" ({part})" if part else ""
        summary = f"Alliance drop{part_text}: {label} {value:g}, " + ", ".join(reasons)
        weakest = min(score.score.subscales, key=lambda k: score.score.subscales[k]) if score.score.subscales else None
        prompt = rules.prompts.for_part(part if part else weakest)
        conditions.append(Condition(AlertKey("alliance_rupture", score.score.instrument, part), severity,
                                    _evidence(rule.id, rule.version, score, summary, rule.source, **values), prompt))
    return conditions, repaired


def deterioration(score: ScoreComputed, state: EpisodeState, rules: RuleSet) -> list[Condition]:
    rule = rules.reliable_deterioration
    change = score.change
    if change is None:
        return []
    series = state.series.get(score.score.instrument, Series())
    rcv = change.reliable_change_value
    sudden = False
    if rcv is not None and series.previous is not None:
        worse = (score.score.total - series.previous) * (1 if score.score.better == "lower" else -1)
        sudden = worse >= rcv and abs(worse) >= rule.sudden_loss_fraction * abs(series.previous)
    if change.reliable != "deteriorated" and not sudden:
        return []
    reasons = []
    if change.reliable == "deteriorated":
        reasons.append(f"{change.change_from_baseline:+g} from baseline {change.baseline_total:g} "
                       f"(reliable change {rcv:g})")
    if sudden:
        reasons.append(f"possible sudden loss from {series.previous:g} last session")
    summary = f"Reliable deterioration on {_name(score)}: {score.score.total:g}, " + "; ".join(reasons)
    evidence = _evidence(rule.id, rule.version, score, summary, rule.source, baseline=change.baseline_total,
                         previous=series.previous, reliable_change=rcv, sudden_loss=sudden)
    return [Condition(AlertKey("reliable_deterioration", score.score.instrument, None), "high", evidence,
                      rules.prompts.deterioration)]


def not_on_track(score: ScoreComputed, session: int, rules: RuleSet) -> list[Condition]:
    rule = rules.not_on_track
    change = score.change
    if change is None or score.score.caseness is not True or session < rule.at_risk_session:
        return []
    if change.reliable == "improved":
        return []
    stalled = session >= rule.stalled_session
    summary = (f"{'Stalled' if stalled else 'Not on track'} on {_name(score)} at session {session}: "
               f"{score.score.total:g}, still in the clinical range, no reliable improvement from "
               f"{change.baseline_total:g}")
    evidence = _evidence(rule.id, rule.version, score, summary, rule.source, session=session,
                         checkpoint=rule.stalled_session if stalled else rule.at_risk_session,
                         baseline=change.baseline_total)
    return [Condition(AlertKey("not_on_track", score.score.instrument, None), "high" if stalled else "medium",
                      evidence, rules.prompts.not_on_track)]


# --- the lifecycle ---------------------------------------------------------------------------


def _raise(score: ScoreComputed, c: Condition, now: datetime) -> AlertTransition:
    alert = Alert(
        alert_id=alert_id(score, c.key), tenant=score.tenant, kind=c.key.kind,
        severity=c.severity, status="open", client_id=score.client_id, episode_id=score.episode_id,
        clinician_id=score.clinician_id, instrument=c.key.instrument, subscale=c.key.subscale,
        opened_at=now, updated_at=now, evidence=[c.evidence], repair_prompt=c.prompt, version=1,
    )
    return AlertTransition(transition="raised", alert=alert, by=ENGINE, at=now, notify=True)


def _update(alert: Alert, c: Condition, now: datetime) -> AlertTransition:
    severity = max(alert.severity, c.severity, key=SEVERITY_ORDER.index)
    updated = alert.model_copy(update={
        "severity": severity, "updated_at": now, "evidence": [*alert.evidence, c.evidence][-EVIDENCE_KEPT:],
        "repair_prompt": c.prompt or alert.repair_prompt, "version": alert.version + 1,
    })
    worse = SEVERITY_ORDER.index(severity) > SEVERITY_ORDER.index(alert.severity)
    return AlertTransition(transition="updated", alert=updated, by=ENGINE, at=now,
                           notify=worse or alert.kind == "critical_item")


def _resolve(alert: Alert, resolution: Resolution, reason: str, now: datetime, by: str = ENGINE) -> AlertTransition:
    resolved = alert.model_copy(update={"status": "resolved", "resolution": resolution, "resolved_reason": reason,
                                        "updated_at": now, "version": alert.version + 1})
    return AlertTransition(transition="resolved", alert=resolved, by=by, at=now, reason=reason)


def _advance(state: EpisodeState, score: ScoreComputed) -> EpisodeState:
    series = dict(state.series)
    parts: list[tuple[str | None, float]] = [(None, score.score.total), *score.score.subscales.items()]
    for part, value in parts:
        name = series_name(score.score.instrument, part)
        before = series.get(name, Series())
        series[name] = Series(count=before.count + 1, previous=value, earlier=before.earlier.add(value))
    return state.model_copy(update={"series": series, "latest_at": max(state.latest_at, score.administered_at)})


def evaluate(state: EpisodeState | None, score: ScoreComputed, open_alerts: Mapping[AlertKey, Alert], *,
             rules: RuleSet, now: datetime) -> Evaluation:
    state = state or EpisodeState(latest_at=score.administered_at)
    instrument = score.score.instrument
    session = score.session_number or state.series.get(instrument, Series()).count + 1
    conditions = critical_items(score, rules)
    repaired: dict[str, str] = {}
    if score.score.kind == "alliance":
        found, repaired = alliance(score, state, rules)
        conditions += found
    else:
        conditions += deterioration(score, state, rules) + not_on_track(score, session, rules)
    transitions: list[AlertTransition] = []
    current = dict(open_alerts)
    ruptures = dict(state.ruptures)
    desired = {c.key: c for c in conditions}
    for key, c in desired.items():
        transitions.append(_update(current[key], c, now) if key in current else _raise(score, c, now))
        current[key] = transitions[-1].alert
        name = series_name(key.instrument, key.subscale)
        if key.kind == "alliance_rupture" and name not in ruptures:
            ruptures[name] = Rupture(level_to_regain=_level_to_regain(state, name, c, score))
    for key, alert in list(current.items()):
        if key.instrument != instrument:
            continue
        name = series_name(key.instrument, key.subscale)
        if key.kind == "alliance_rupture" and name in repaired:
            transitions.append(_resolve(alert, "repaired", repaired[name], now))
            ruptures.pop(name, None)
        elif key.kind == "alliance_rupture" and name in state.ruptures:
            # a session after the rupture without repair, whether or not it brought new evidence
            rupture = ruptures[name].model_copy(update={"sessions_since": ruptures[name].sessions_since + 1})
            ruptures[name] = rupture
            if rupture.sessions_since >= rules.alliance_rupture.repair_within_sessions and not rupture.escalated:
                ruptures[name] = rupture.model_copy(update={"escalated": True})
                escalated = alert.model_copy(update={
                    "severity": "high", "escalated": True, "updated_at": now, "version": alert.version + 1})
                transitions.append(AlertTransition(
                    transition="escalated", alert=escalated, by=ENGINE, at=now, notify=True,
                    reason=f"not repaired after {rupture.sessions_since} further sessions"))
                current[key] = escalated
        elif key in desired:
            continue
        elif key.kind == "reliable_deterioration":
            transitions.append(_resolve(alert, "no_longer_deteriorated", "no longer reliably worse", now))
        elif key.kind == "not_on_track":
            transitions.append(_resolve(alert, "back_on_track", "reliable improvement or out of the clinical range",
                                        now))
    transitions = _prioritise(transitions, current, score, state)
    risk_unchecked = not score.score.risk_checked
    return Evaluation(state=_advance(state.model_copy(update={"ruptures": ruptures}), score), transitions=transitions,
                      risk_unchecked=risk_unchecked)


def _level_to_regain(state: EpisodeState, name: str, c: Condition, score: ScoreComputed) -> float:
    """The client's own mean before the rupture, or the concern cutoff where that is lower."""
    before = state.series.get(name, Series())
    level = before.earlier.mean if before.earlier.n else c.evidence.score
    cutoff = score.parameters.get("concern_cutoff") if c.key.subscale is None else None
    if isinstance(cutoff, int | float):
        level = min(level, float(cutoff))
    return round(level, 2)


def _prioritise(transitions: list[AlertTransition], current: Mapping[AlertKey, Alert], score: ScoreComputed,
                state: EpisodeState) -> list[AlertTransition]:
    """Not on track together with a falling alliance (an open rupture in the episode) raises priority."""
    rupture_open = bool(state.ruptures) or any(
        t.alert.kind == "alliance_rupture" and t.alert.status != "resolved" for t in transitions
    ) or any(k.kind == "alliance_rupture" for k in current)
    if not rupture_open:
        return transitions
    out = []
    for t in transitions:
        if t.alert.kind == "not_on_track" and t.alert.status != "resolved" and not t.alert.priority_raised:
            t = t.model_copy(update={"alert": t.alert.model_copy(update={"priority_raised": True}), "notify": True})
        out.append(t)
    return out


def replay(scores: Sequence[ScoreComputed], *, rules: RuleSet, now: datetime) -> Replayed:
    """Evaluate an episode from the start, in administration order (late or amended scores)."""
    result = Replayed(state=None)
    for score in sorted(scores, key=lambda s: (s.administered_at, s.submission_id)):
        open_alerts = {AlertKey.of(a): a for a in result.alerts.values() if a.status != "resolved"}
        evaluation = evaluate(result.state, score, open_alerts, rules=rules, now=now)
        result.state = evaluation.state
        for t in evaluation.transitions:
            result.alerts[t.alert.alert_id] = t.alert
    return result


def reconcile(stored: Sequence[Alert], replayed: Mapping[str, Alert], *, now: datetime) -> list[AlertTransition]:
    """The transitions that turn the stored alerts into what the replay says, keeping clinicians' work:
    an acknowledged alert stays acknowledged; an alert whose evidence vanished is resolved as superseded."""
    known = {a.alert_id: a for a in stored}
    out: list[AlertTransition] = []
    for alert_id, new in replayed.items():
        old = known.get(alert_id)
        if old is None:
            if new.status != "resolved":
                out.append(AlertTransition(transition="raised", alert=new.model_copy(update={"version": 1}),
                                           by=ENGINE, at=now, notify=True))
            continue
        if old.status == "resolved":
            continue
        if new.status == "resolved":
            out.append(_resolve(old, new.resolution or "cleared", new.resolved_reason or "re-evaluated", now))
        elif new.evidence != old.evidence or new.severity != old.severity:
            merged = new.model_copy(update={"status": old.status, "version": old.version + 1, "updated_at": now})
            out.append(AlertTransition(transition="updated", alert=merged, by=ENGINE, at=now))
    for old in stored:
        if old.alert_id not in replayed and old.status != "resolved":
            out.append(_resolve(old, "superseded", "its evidence changed (late or amended submission)", now))
    return out


def apply_command(alert: Alert, command: AlertCommand, now: datetime) -> AlertTransition | CommandRejected:
    if alert.status == "resolved":
        return CommandRejected(f"the alert is already resolved ({alert.resolution})")
    if command.action == "acknowledge":
        if alert.status == "acknowledged":
            return CommandRejected("the alert is already acknowledged")
        acknowledged = alert.model_copy(update={"status": "acknowledged", "updated_at": now,
                                                "version": alert.version + 1})
        return AlertTransition(transition="acknowledged", alert=acknowledged, by=command.by, at=now,
                               reason=command.reason)
    if not command.reason:
        return CommandRejected("resolving by hand needs a reason")
    return _resolve(alert, "by_hand", command.reason, now, by=command.by)
