"""Critical (risk) items: any finding raises an alert at once, even on a first submission.

Scoring decides which items are critical and at what threshold (the instrument registry); this rule
turns its findings into an alert whose severity follows the item's grading in the registry: at or
above its higher-risk level, or on an item no source grades (CORE-10 item 6), `severity.higher_risk`
(critical); below it, `severity.lower_risk` (PHQ-9 item 9 at 1 against 2-3: Simon et al. 2013,
Louzon et al. 2016). The alert is never cleared by a later score: a clinician resolves it by hand. A
score whose risk items could not be checked raises nothing by itself; the evidence of any other alert
from it says so, and `Evaluation.risk_unchecked` reports it."""

from __future__ import annotations

from rapport.services.alerts.rules.conditions import Context, Finding, Verdict, evidence, points, worst
from rapport.services.alerts.rules.state import AlertKey, EpisodeState
from rapport.shared.contracts.score import CriticalItemFinding, ScoreComputed
from rapport.shared.instruments.model import CriticalItem


def registry_item(score: ScoreComputed, finding: CriticalItemFinding, context: Context) -> CriticalItem | None:
    instrument = context.instrument(score.score.instrument)
    return next((c for c in instrument.critical_items if c.item == finding.item), None) if instrument else None


class CriticalItems:
    rule = "critical_item"

    def judge(self, score: ScoreComputed, before: EpisodeState, context: Context) -> Verdict:
        rule = context.rules.critical_item
        found = score.score.critical_items
        if not found:
            return Verdict()
        name = context.rules.name(score.score.instrument)
        items = {f.item: registry_item(score, f, context) for f in found}
        # an item the registry does not know (or does not grade) is read at the higher level: the safe side
        higher = {f.item: (spec := items[f.item]) is None or spec.higher_risk(f.value) for f in found}
        described = ", ".join(f"item {f.item} = {points(f.value)} ({f.label})" for f in found)
        summary = f"Risk item endorsed on {name}: {described}"
        if any(higher[f.item] and (spec := items[f.item]) is not None and spec.grading for f in found):
            summary += ", at the higher-risk level"
        values = {
            "session": context.session,
            "items": {str(f.item): f.value for f in found},
            "thresholds": {str(f.item): f.threshold for f in found},
            "risk_levels": {str(f.item): "higher" if higher[f.item] else "lower" for f in found},
            "first_submission": before.sessions == 0 or None,
        }
        severity = worst(*(rule.severity.higher_risk if higher[f.item] else rule.severity.lower_risk for f in found))
        key = AlertKey("critical_item", score.score.instrument, None)
        found_now = evidence(context, rule, score, summary, values)
        return Verdict(findings=[Finding(key, severity, found_now, rule.prompt)])
