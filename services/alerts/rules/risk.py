"""Critical (risk) items: any finding raises a critical alert at once, even on a first submission.

Scoring decides which items are critical and at what threshold (the instrument registry); this rule
only turns its findings into an alert. The alert is never cleared by a later score: a clinician
resolves it by hand. A score whose risk items could not be checked raises nothing by itself; the
evidence of any other alert from it says so, and `Evaluation.risk_unchecked` reports it."""

from __future__ import annotations

from rapport.services.alerts.rules.conditions import Context, Finding, Verdict, evidence, points
from rapport.services.alerts.rules.state import AlertKey, EpisodeState
from rapport.shared.contracts.score import ScoreComputed


class CriticalItems:
    def judge(self, score: ScoreComputed, before: EpisodeState, context: Context) -> Verdict:
        rule = context.rules.critical_item
        found = score.score.critical_items
        if not found:
            return Verdict()
        name = context.rules.name(score.score.instrument)
        described = ", ".join(f"item {f.item} = {points(f.value)} ({f.label})" for f in found)
        summary = f"Risk item endorsed on {name}: {described}"
        values = {
            "session": context.session,
            "items": {str(f.item): f.value for f in found},
            "thresholds": {str(f.item): f.threshold for f in found},
            "first_submission": before.sessions == 0 or None,
        }
        key = AlertKey("critical_item", score.score.instrument, None)
        found_now = evidence(context, rule, score, summary, values)
        return Verdict(findings=[Finding(key, rule.severity, found_now, rule.prompt)])
