"""Alliance rupture and repair, per total and per subscale (goal, task, bond).

A rupture is any of (anchors §3.4, §5):
- the total below the instrument's concern cutoff (SRS < 36 [R14][R20]); the scoring service puts
  the cutoff in ScoreComputed.parameters['concern_cutoff'], and without one there is no cutoff check;
- a drop from the previous session of at least the drop amount (OpenFIT: SRS 1 point [R14]);
- a person-relative drop, z = (x - own mean) / own SD over the client's earlier scores in the
  series, once there are 3: z <= -1 minor, z <= -2 major [R83]. The SD is floored (sd_floor_points)
  so that a very steady series does not turn a fraction of a point into a major rupture.

Repair: the score is back to at least the pre-rupture level and no rupture reason holds now. The
pre-rupture level is fixed when the rupture opens: the client's own mean over the sessions before
it, less one (floored) SD, i.e. back within the 'lenient' band (z >= -1 against the pre-rupture
sessions); never below the concern cutoff for a total. With only one earlier session that is the
previous score less the floor (38 -> 31 -> 37 is repaired); with none (a first score below the
cutoff) it is the cutoff. The rule reports 'repaired' as a clearing; following the rupture for k
sessions and escalating it is the lifecycle's part (engine.py).

A total-level rupture names the weakest part: the subscale (or, for SRS, the part read from its
mapped item) that fell most since the last session, else the lowest one; its prompt goes with it.
Subscales are compared on their raw scores, which is fair for WAI-SR (four items each)."""

from __future__ import annotations

from rapport.services.alerts.rules.conditions import (
    Clearing,
    Context,
    Finding,
    Verdict,
    evidence,
    points,
    worst,
)
from rapport.services.alerts.rules.ruleset import AllianceRupture
from rapport.services.alerts.rules.state import AlertKey, EpisodeState, Rupture, Series, series_name
from rapport.shared.contracts.alert import Severity
from rapport.shared.contracts.score import ScoreComputed


def parts_of(score: ScoreComputed, rule: AllianceRupture) -> dict[str, float]:
    """The alliance's parts in this score: its subscales, or its items mapped onto goal/task/bond."""
    if score.score.subscales:
        return dict(score.score.subscales)
    found: dict[str, float] = {}
    for item, part in rule.item_parts(score.score.instrument).items():
        value = score.responses.get(item)
        if value is not None:
            found[part] = value
    return found


def weakest_part(score: ScoreComputed, before: EpisodeState, rule: AllianceRupture) -> str | None:
    """The part that fell most since last session; else the lowest part; None when parts tie."""
    parts = parts_of(score, rule)
    drops: dict[str, float] = {}
    for part, value in parts.items():
        previous = before.series_of(series_name(score.score.instrument, part)).previous
        if previous is not None and previous > value:
            drops[part] = previous - value
    return _single_max(drops) or _single_max({p: -v for p, v in parts.items()})


def _single_max(values: dict[str, float]) -> str | None:
    """The key of the largest value when exactly one has it: a tie names no part."""
    if not values:
        return None
    top = max(values.values())
    at_top = [k for k, v in values.items() if v == top]
    return at_top[0] if len(at_top) == 1 else None


def level_to_regain(series: Series, cutoff: float | None, floor: float) -> float | None:
    """The pre-rupture level, fixed when the rupture opens (see the module docstring)."""
    running = series.running
    level = running.mean - max(running.sd or 0.0, floor) if running.n else None
    if cutoff is not None:
        level = cutoff if level is None else max(level, cutoff)
    return None if level is None else round(level, 2)


class AllianceRuptures:
    rule = "alliance_rupture"

    def judge(self, score: ScoreComputed, before: EpisodeState, context: Context) -> Verdict:
        if score.score.kind != "alliance":
            return Verdict()
        rule = context.rules.alliance_rupture
        p = rule.parameters
        instrument = score.score.instrument
        name = context.rules.name(instrument)
        cutoff = context.concern_cutoff(score)  # the tenant's own, else the registry's
        weakest = weakest_part(score, before, rule)
        findings: list[Finding] = []
        clearings: list[Clearing] = []
        for part, value in [(None, score.score.total), *sorted(score.score.subscales.items())]:
            series_id = series_name(instrument, part)
            series = before.series_of(series_id)
            key = AlertKey("alliance_rupture", instrument, part)
            label = f"{name} {part} {points(value)}" if part else f"{name} {points(value)}"
            reasons: list[str] = []
            severities: list[Severity] = []
            values: dict[str, object] = {"value": value, "previous": series.previous, "session": context.session}
            drop = rule.drop_points(series_id)
            if series.previous is not None and series.previous - value >= drop:
                reasons.append(f"down from {points(series.previous)} last session")
                severities.append(rule.severity.drop)
                values["drop_points"] = drop
            if part is None and cutoff is not None and value < cutoff:
                reasons.append(f"below the concern cutoff {points(cutoff)}")
                severities.append(rule.severity.below_cutoff)
                values["concern_cutoff"] = cutoff
            if series.running.n >= p.min_earlier_sessions.value:
                sd = max(series.running.sd or 0.0, p.sd_floor_points.value)
                z = (value - series.running.mean) / sd
                values |= {"z": round(z, 2), "own_mean": round(series.running.mean, 2),
                           "own_sd": round(series.running.sd or 0.0, 2), "own_sessions": series.running.n}
                if z <= p.z_minor.value:
                    major = z <= p.z_major.value
                    reasons.append(f"{abs(z):.1f} SD below the client's own mean {points(series.running.mean)}"
                                   + (" (major)" if major else ""))
                    severities.append(rule.severity.major if major else rule.severity.minor)
            open_rupture = before.ruptures.get(series_id)
            if not reasons:
                if open_rupture is not None and value >= open_rupture.level_to_regain:
                    clearings.append(Clearing(key, "repaired", f"{label}, back to at least the pre-rupture level "
                                                               f"{points(open_rupture.level_to_regain)}"))
                continue
            named = part or weakest
            if part is None and weakest is not None:
                values["weakest_part"] = weakest
            level = level_to_regain(series, cutoff if part is None else None, p.sd_floor_points.value)
            if level is None:  # cannot happen: every reason needs a cutoff or earlier scores
                continue
            values["level_to_regain"] = open_rupture.level_to_regain if open_rupture else level
            summary = f"Alliance drop{f' ({named})' if named else ''}: {label}, " + ", ".join(reasons)
            # an unnamed total keeps the prompt its open rupture already has
            prompt = rule.prompts.for_part(named) if named or open_rupture is None else None
            findings.append(Finding(
                key, worst(*severities), evidence(context, rule, score, summary, values), prompt,
                rupture=Rupture(opened_by=score.submission_id, level_to_regain=level),
            ))
        return Verdict(findings=findings, clearings=clearings)

