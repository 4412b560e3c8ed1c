"""The pure alert engine: rules as data (rules.toml), compact episode state, the alert lifecycle.

    evaluate(state, score, open_alerts, rules=, now=) -> Evaluation(state, transitions, notifications,
                                                                    risk_unchecked)
    replay(scores, rules=, now=) -> Replayed(state, alerts, transitions)
    EpisodeAlerts(state, open): take(score) -> Evaluation, needs_replay(scores),
                                EpisodeAlerts.replay(history, alerts) -> (episode, transitions)
    reconcile(stored_alerts, replayed.alerts, now=) -> [AlertTransition]
    check(PolicyValues, registry) -> [PolicyProblem]; applied(rules, ClinicalPolicy) -> the rules under a
    tenant's clinical policy (rules/policy.py)
    apply_command(alert, command, now) -> AlertTransition | CommandRejected
    notification_for(transition) -> Notification | None; with_words(transition): headline and evidence set
"""

from rapport.services.alerts.rules.attendance import AttendanceVerdict, Episode, judge_attendance, summarise
from rapport.services.alerts.rules.conditions import Check, Clearing, Context, Finding, Verdict
from rapport.services.alerts.rules.engine import (
    CHECKS,
    EpisodeAlerts,
    Evaluation,
    Replayed,
    evaluate,
    reconcile,
    replay,
)
from rapport.services.alerts.rules.lifecycle import ENGINE, CommandRejected, alert_id, apply_command
from rapport.services.alerts.rules.notify import notification_for, with_words
from rapport.services.alerts.rules.policy import ClinicalPolicy, PolicyProblem, PolicyValues, applied, check
from rapport.services.alerts.rules.ruleset import RuleSet, load_ruleset
from rapport.services.alerts.rules.state import AlertKey, EpisodeState

__all__ = [
    "CHECKS",
    "ENGINE",
    "AlertKey",
    "AttendanceVerdict",
    "Check",
    "Clearing",
    "ClinicalPolicy",
    "CommandRejected",
    "Context",
    "Episode",
    "EpisodeAlerts",
    "EpisodeState",
    "Evaluation",
    "Finding",
    "PolicyProblem",
    "PolicyValues",
    "Replayed",
    "RuleSet",
    "Verdict",
    "alert_id",
    "applied",
    "apply_command",
    "check",
    "evaluate",
    "judge_attendance",
    "load_ruleset",
    "notification_for",
    "reconcile",
    "replay",
    "summarise",
    "with_words",
]
