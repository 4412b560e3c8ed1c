"""Alliance rupture and repair: one alert per rupture, judged over the total and its parts together.

A measure's total and its parts (WAI-SR: goal, task, bond; SRS: items read as parts) are judged
together, and a rupture in any of them is one `alliance_rupture` alert on the measure (subscale
None) whose evidence names the parts that dropped (`parts`, with each part's own numbers). A series
(the total or a part) is ruptured when any of (anchors §3.4, §5):
- the total is below the instrument's concern cutoff (SRS < 36 [R14][R20]); the scoring service puts
  the cutoff in ScoreComputed.parameters['concern_cutoff'], and without one there is no cutoff check;
- it dropped from the previous session by at least the measure's drop for that series: a published
  figure (OpenFIT: SRS 1 point [R14]), else the Jacobson & Truax reliable drop 1.96 * SD * sqrt(2(1 - r))
  from a sourced SD and reliability of that series [R80]; a series with neither has no such check
  (WAI-SR and SAI today: no SD was found, so no drop is invented);
- a person-relative drop, z = (x - own mean) / SD over the client's earlier scores in the series,
  once there are 3: z <= -1 minor, z <= -2 major [R83]. After Gumz et al. [R83] the SD is the stricter
  (larger) of the client's own and the between-person SD of that series where one is sourced; never
  smaller than the series' floor, so that one item one step on a steady series is not a rupture.

Repair: no rupture reason holds now on the total or any part, and the total and every part that
dropped are back to at least their pre-rupture level. The pre-rupture level is fixed when the
rupture opens: the client's own mean over the sessions before it, less one (floored) SD, i.e. back
within the 'lenient' band (z >= -1 against the pre-rupture sessions); never below the concern cutoff
for a total. With only one earlier session that is the previous score less the floor (38 -> 31 -> 37
is repaired); with none (a first score below the cutoff) it is the cutoff. The rule reports
'repaired' as a clearing; following the rupture for k sessions and escalating it is the lifecycle's
part (engine.py).

The alert names the part(s) inside it: the parts that dropped, else (a rupture of the total alone) the
weakest part: the one that fell most since the last session, else the lowest one; its prompt goes
with it. Parts are compared on their raw scores, which is fair for WAI-SR (four items each).

Alerts raised per part before rule version 3 (a WAI-SR bond alert beside a total one) are still
followed: such a part's alert resolves as repaired when that part is back and holds no reason."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """The pre-rupture level, fixed when the rupture opens (see the module docstring). `floor`: the smallest SD
    the series is read with (its floor, or its between-person SD where that is larger)."""
    running = series.running
    level = running.mean - max(running.sd or 0.0, floor) if running.n else None
    if cutoff is not None:
        level = cutoff if level is None else max(level, cutoff)
    return None if level is None else round(level, 2)


@dataclass
class Judged:
    """One series (the total, or one part) judged against the client's own earlier scores."""

    value: float
    reasons: list[str] = field(default_factory=list)
    severities: list[Severity] = field(default_factory=list)
    values: dict[str, object] = field(default_factory=dict)


def judge_series(value: float, series: Series, series_id: str, rule: AllianceRupture,
                 cutoff: float | None) -> Judged:
    """The rupture reasons that hold for one series now (see the module docstring)."""
    p = rule.parameters
    judged = Judged(value, values={"value": value, "previous": series.previous})
    drop = rule.drop_points(series_id)
    if drop is not None and series.previous is not None and series.previous - value >= drop:
        judged.reasons.append(f"down from {points(series.previous)} last session")
        judged.severities.append(rule.severity.drop)
        judged.values["drop_points"] = drop
    if cutoff is not None and value < cutoff:
        judged.reasons.append(f"below the concern cutoff {points(cutoff)}")
        judged.severities.append(rule.severity.below_cutoff)
        judged.values["concern_cutoff"] = cutoff
    if series.running.n >= p.min_earlier_sessions.value:
        sd = rule.sd_for(series_id, series.running.sd)
        z = (value - series.running.mean) / sd
        judged.values |= {"z": round(z, 2), "own_mean": round(series.running.mean, 2),
                          "own_sd": round(series.running.sd or 0.0, 2), "sd_used": round(sd, 2),
                          "own_sessions": series.running.n}
        if z <= p.z_minor.value:
            major = z <= p.z_major.value
            judged.reasons.append(f"{abs(z):.1f} SD below the client's own mean {points(series.running.mean)}"
                                  + (" (major)" if major else ""))
            judged.severities.append(rule.severity.major if major else rule.severity.minor)
    return judged


class AllianceRuptures:
    rule = "alliance_rupture"

    def judge(self, score: ScoreComputed, before: EpisodeState, context: Context) -> Verdict:
        if score.score.kind != "alliance":
            return Verdict()
        rule = context.rules.alliance_rupture
        instrument = score.score.instrument
        name = context.rules.name(instrument)
        cutoff = context.concern_cutoff(score)  # the tenant's own, else the registry's
        key = AlertKey("alliance_rupture", instrument, None)
        total_series = before.series_of(instrument)
        total = judge_series(score.score.total, total_series, instrument, rule, cutoff)
        parts = {part: judge_series(value, before.series_of(series_name(instrument, part)),
                                    series_name(instrument, part), rule, None)
                 for part, value in sorted(score.score.subscales.items())}
        dropped = [part for part, judged in parts.items() if judged.reasons]
        clearings = self._legacy_part_clearings(score, before, parts, name)
        open_rupture = before.ruptures.get(instrument)
        if not total.reasons and not dropped:
            if open_rupture is not None and self._regained(score, open_rupture):
                regained = ", ".join(f"{part} {points(parts[part].value)}" for part in open_rupture.parts_to_regain)
                clearings.append(Clearing(key, "repaired", (
                    f"{name} {points(score.score.total)}{f' ({regained})' if regained else ''}, back to at least "
                    f"the pre-rupture level {points(open_rupture.level_to_regain)}")))
            return Verdict(clearings=clearings)
        weakest = None if dropped else weakest_part(score, before, rule)
        named = dropped or ([weakest] if weakest else [])
        values: dict[str, object] = {**total.values, "session": context.session}
        if dropped:
            values["parts"] = {part: parts[part].values for part in dropped}
        elif weakest is not None:
            values["weakest_part"] = weakest
        level = level_to_regain(total_series, cutoff, rule.sd_for(instrument, None))
        part_levels = {part: lv for part in dropped if (lv := level_to_regain(
            before.series_of(series_name(instrument, part)), None,
            rule.sd_for(series_name(instrument, part), None))) is not None}
        if level is None and not part_levels:  # cannot happen: every reason needs a cutoff or earlier scores
            return Verdict(clearings=clearings)
        level = score.score.total if level is None else level
        values["level_to_regain"] = open_rupture.level_to_regain if open_rupture else level
        said = [f"{name} {points(score.score.total)}{', ' + ', '.join(total.reasons) if total.reasons else ''}"]
        said += [f"{part} {points(parts[part].value)}, {', '.join(parts[part].reasons)}" for part in dropped]
        naming = f" ({', '.join(named)})" if named else ""
        summary = f"Alliance drop{naming}: " + "; ".join(said)
        # an unnamed total keeps the prompt its open rupture already has
        prompt = " ".join(rule.prompts.for_part(part) for part in named) if named \
            else (rule.prompts.for_part(None) if open_rupture is None else None)
        severity = worst(*total.severities, *(s for part in dropped for s in parts[part].severities))
        return Verdict(findings=[Finding(
            key, severity, evidence(context, rule, score, summary, values), prompt,
            rupture=Rupture(opened_by=score.submission_id, level_to_regain=level, parts_to_regain=part_levels),
        )], clearings=clearings)

    @staticmethod
    def _regained(score: ScoreComputed, rupture: Rupture) -> bool:
        """The total and every part that dropped are back to their pre-rupture levels."""
        subscales = score.score.subscales
        return score.score.total >= rupture.level_to_regain and all(
            part not in subscales or subscales[part] >= level for part, level in rupture.parts_to_regain.items())

    @staticmethod
    def _legacy_part_clearings(score: ScoreComputed, before: EpisodeState, parts: dict[str, Judged],
                               name: str) -> list[Clearing]:
        """Per-part alerts raised before rule version 3: repaired when the part is back and holds no reason."""
        clearings = []
        for part, judged in parts.items():
            held = before.ruptures.get(series_name(score.score.instrument, part))
            if held is not None and not judged.reasons and judged.value >= held.level_to_regain:
                clearings.append(Clearing(
                    AlertKey("alliance_rupture", score.score.instrument, part), "repaired",
                    f"{name} {part} {points(judged.value)}, back to at least the pre-rupture level "
                    f"{points(held.level_to_regain)}"))
        return clearings
