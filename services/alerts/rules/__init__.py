"""The pure alert engine: rules as data (rules.toml), compact episode state, the alert lifecycle."""

from services.alerts.rules.engine import (
    CommandRejected,
    Evaluation,
    Replayed,
    apply_command,
    evaluate,
    reconcile,
    replay,
)
from services.alerts.rules.notify import notification_for
from services.alerts.rules.ruleset import RuleSet, load_ruleset
from services.alerts.rules.state import AlertKey, EpisodeState

__all__ = [
    "AlertKey", "CommandRejected", "EpisodeState", "Evaluation", "Replayed", "RuleSet", "apply_command",
    "evaluate", "load_ruleset", "notification_for", "reconcile", "replay",
]
