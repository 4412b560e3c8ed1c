"""The alert lifecycle: one open alert per key, clinicians' commands, notifications, late scores."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from rapport.services.alerts.rules import (
    ENGINE,
    AlertKey,
    CommandRejected,
    EpisodeAlerts,
    EpisodeState,
    apply_command,
    load_ruleset,
    notification_for,
    reconcile,
    replay,
)
from rapport.shared.contracts.alert import Alert, AlertCommand, AlertTransition
from rapport.shared.contracts.score import ChangeFromBaseline, ScoreComputed, Scored

RULES = load_ruleset()
T0 = datetime(2026, 2, 2, 9, tzinfo=UTC)
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
LATER = NOW + timedelta(hours=3)


def srs(total: float, session: int, *, episode: str = "ep-001") -> ScoreComputed:
    scored = Scored(instrument="srs", instrument_version="3", kind="alliance", better="higher", total=total,
                    total_min=0, total_max=40, risk_checked=True)
    return ScoreComputed(
        tenant="clinic-a", submission_id=f"{episode}-srs-{session}", revision=1, client_id="client-001",
        episode_id=episode, clinician_id="clin-07", administered_at=T0 + timedelta(days=7 * session),
        session_number=session, score=scored, parameters={"concern_cutoff": 36},
    )


def phq9(total: float, session: int, baseline: float | None) -> ScoreComputed:
    change = None
    if baseline is not None:
        delta = total - baseline
        reliable = "deteriorated" if delta >= 6 else "improved" if delta <= -6 else "none"
        change = ChangeFromBaseline(baseline_total=baseline, baseline_at=T0, change_from_baseline=delta,
                                    reliable_change_value=6, reliable=reliable)
    scored = Scored(instrument="phq9", instrument_version="1", kind="outcome", better="lower", total=total,
                    total_min=0, total_max=27, caseness=total >= 10, risk_checked=True)
    return ScoreComputed(
        tenant="clinic-a", submission_id=f"ep-001-phq-{session}", revision=1, client_id="client-001",
        episode_id="ep-001", clinician_id="clin-07", administered_at=T0 + timedelta(days=7 * session, hours=1),
        session_number=session, score=scored, change=change,
    )


def run(scores: list[ScoreComputed], open_alerts: dict[AlertKey, Alert] | None = None,
        state: EpisodeState | None = None) -> tuple[EpisodeState | None, dict[AlertKey, Alert], list[AlertTransition]]:
    """Evaluate in the given order, keeping open alerts as the service does."""
    episode = EpisodeAlerts(state, dict(open_alerts or {}))
    log: list[AlertTransition] = []
    for score in scores:
        log += episode.take(score, rules=RULES, now=NOW).transitions
    return episode.state, episode.open, log


def rupture() -> Alert:
    _, current, _ = run([srs(38, 1), srs(31, 2)])
    return current[AlertKey("alliance_rupture", "srs", None)]


def command(alert: Alert, action: str, reason: str | None = None) -> AlertCommand:
    return AlertCommand.model_validate({"command_id": "cmd-1", "alert_id": alert.alert_id, "action": action,
                                        "by": "clin-07", "reason": reason})


# --- transitions by the rules ---------------------------------------------------------------------


def test_every_rule_transition_is_by_the_engine_at_the_time_passed_in() -> None:
    _, _, log = run([srs(38, 1), srs(31, 2), srs(30, 3), srs(38, 4)])
    assert [t.transition for t in log] == ["raised", "updated", "resolved"]
    assert all(t.by == ENGINE == "rapport/alerts" and t.at == NOW and t.alert.updated_at == NOW for t in log)
    assert [t.alert.version for t in log] == [1, 2, 3]
    assert log[0].alert.opened_at == NOW  # not the administration time


def test_alert_ids_are_the_same_on_every_replica_and_replay() -> None:
    first = rupture()
    assert first.alert_id == rupture().alert_id
    assert uuid.UUID(first.alert_id).version == 5
    _, other_episode, _ = run([srs(38, 1, episode="ep-002"), srs(31, 2, episode="ep-002")])
    assert other_episode[AlertKey("alliance_rupture", "srs", None)].alert_id != first.alert_id


def test_notifications_only_for_transitions_that_warrant_them() -> None:
    _, _, log = run([srs(38, 1), srs(31, 2), srs(30, 3), srs(38, 4)])
    raised, updated, resolved = log
    assert notification_for(raised) is not None
    assert notification_for(updated) is None and notification_for(resolved) is None


def test_a_notification_carries_ids_and_clinical_words_only() -> None:
    _, _, log = run([srs(38, 1), srs(31, 2)])
    message = notification_for(log[0])
    assert message is not None
    assert (message.alert_id, message.client_id, message.episode_id) == (log[0].alert.alert_id, "client-001",
                                                                         "ep-001")
    assert message.transition == "raised" and message.severity == "medium"
    assert "Rule alliance_rupture v" in message.evidence and "R14" in message.evidence


# --- clinicians' commands -------------------------------------------------------------------------


def test_a_clinician_acknowledges_an_open_alert() -> None:
    alert = rupture()
    moved = apply_command(alert, command(alert, "acknowledge"), LATER)
    assert isinstance(moved, AlertTransition)
    assert moved.transition == "acknowledged" and moved.alert.status == "acknowledged"
    assert (moved.by, moved.at, moved.alert.version) == ("clin-07", LATER, alert.version + 1)
    again = apply_command(moved.alert, command(moved.alert, "acknowledge"), LATER)
    assert isinstance(again, CommandRejected) and "already acknowledged" in again.reason


def test_resolving_by_hand_needs_a_reason() -> None:
    alert = rupture()
    for reason in (None, "   "):
        refused = apply_command(alert, command(alert, "resolve", reason), LATER)
        assert isinstance(refused, CommandRejected) and "reason" in refused.reason
    moved = apply_command(alert, command(alert, "resolve", "talked it through in session"), LATER)
    assert isinstance(moved, AlertTransition)
    assert moved.alert.status == "resolved" and moved.alert.resolution == "by_hand"
    assert moved.alert.resolved_reason == "talked it through in session" and moved.by == "clin-07"


def test_an_acknowledged_alert_can_be_resolved_by_hand() -> None:
    alert = rupture()
    acknowledged = apply_command(alert, command(alert, "acknowledge"), LATER)
    assert isinstance(acknowledged, AlertTransition)
    moved = apply_command(acknowledged.alert, command(alert, "resolve", "repaired in session"), LATER)
    assert isinstance(moved, AlertTransition) and moved.alert.version == alert.version + 2


def test_a_resolved_alert_cannot_be_resolved_or_acknowledged() -> None:
    alert = rupture()
    closed = apply_command(alert, command(alert, "resolve", "done"), LATER)
    assert isinstance(closed, AlertTransition)
    for action in ("resolve", "acknowledge"):
        refused = apply_command(closed.alert, command(closed.alert, action, "again"), LATER)
        assert isinstance(refused, CommandRejected) and "already resolved (by_hand)" in refused.reason


def test_a_command_for_another_alert_is_refused() -> None:
    alert = rupture()
    other = alert.model_copy(update={"alert_id": "another"})
    refused = apply_command(alert, command(other, "acknowledge"), LATER)
    assert isinstance(refused, CommandRejected)


def test_an_acknowledged_rupture_stays_acknowledged_on_new_evidence_and_reopens_when_escalated() -> None:
    state, current, _ = run([srs(38, 1), srs(31, 2)])
    key = AlertKey("alliance_rupture", "srs", None)
    acknowledged = apply_command(current[key], command(current[key], "acknowledge"), LATER)
    assert isinstance(acknowledged, AlertTransition)
    current[key] = acknowledged.alert
    state, current, log = run([srs(30, 3)], current, state)
    assert log[0].transition == "updated" and log[0].alert.status == "acknowledged"
    _, current, log = run([srs(30, 4)], current, state)
    assert log[0].transition == "escalated" and log[0].alert.status == "open" and log[0].notify


def test_after_a_rupture_is_resolved_by_hand_a_new_drop_raises_a_new_alert() -> None:
    state, current, _ = run([srs(38, 1), srs(31, 2)])
    key = AlertKey("alliance_rupture", "srs", None)
    closed = apply_command(current[key], command(current[key], "resolve", "discussed"), LATER)
    assert isinstance(closed, AlertTransition)
    del current[key]
    state, current, log = run([srs(38, 3), srs(38, 4), srs(38, 5)], current, state)
    assert log == [] and state is not None and state.ruptures == {}  # no follow-up of a closed alert
    _, current, log = run([srs(33, 6)], current, state)
    assert log[0].transition == "raised" and log[0].alert.alert_id != closed.alert.alert_id


# --- late and amended scores ---------------------------------------------------------------------


def _open_by_key(alerts: dict[AlertKey, Alert]) -> dict[AlertKey, tuple[str, str, bool, bool, list[str]]]:
    return {k: (a.severity, a.status, a.escalated, a.priority_raised, [e.submission_id for e in a.evidence])
            for k, a in alerts.items()}


def apply(stored: dict[str, Alert], transitions: list[AlertTransition]) -> dict[str, Alert]:
    out = dict(stored)
    for t in transitions:
        out[t.alert.alert_id] = t.alert
    return out


def test_replay_after_an_out_of_order_score_equals_in_order_evaluation() -> None:
    in_order = [srs(38, 1), phq9(18, 1, None), srs(37, 2), phq9(17, 2, 18), srs(31, 3), phq9(17, 3, 18),
                srs(32, 4), phq9(16, 4, 18), srs(36, 5), phq9(17, 5, 18), srs(30, 6), phq9(16, 6, 18)]
    expected_state, expected_open, _ = run(in_order)
    late = in_order[4]  # the session-3 SRS arrives last
    arrived = [s for s in in_order if s is not late]
    _, open_before, log = run(arrived)
    assert _open_by_key(open_before) != _open_by_key(expected_open)  # the late score matters
    stored = {t.alert.alert_id: t.alert for t in log}
    replayed = replay([*arrived, late], rules=RULES, now=NOW)
    assert replayed.state == expected_state
    reconciled = apply(stored, reconcile(list(stored.values()), replayed.alerts, now=NOW))
    now_open = {AlertKey.of(a): a for a in reconciled.values() if a.status != "resolved"}
    assert _open_by_key(now_open) == _open_by_key(expected_open)
    assert len(now_open) == len({AlertKey.of(a) for a in now_open.values()})


def test_reconcile_supersedes_an_alert_whose_evidence_vanished() -> None:
    _, current, _ = run([srs(38, 1), srs(31, 2)])
    stored = list(current.values())
    amended = srs(37.5, 2).model_copy(update={"revision": 2, "supersedes_revision": 1})
    replayed = replay([srs(38, 1), srs(31, 2), amended], rules=RULES, now=LATER)
    transitions = reconcile(stored, replayed.alerts, now=LATER)
    assert [(t.transition, t.alert.resolution) for t in transitions] == [("resolved", "superseded")]
    assert transitions[0].alert.version == stored[0].version + 1 and transitions[0].at == LATER


def test_reconcile_keeps_the_clinicians_acknowledgement_and_changes_nothing_when_nothing_changed() -> None:
    scores = [srs(38, 1), srs(31, 2), srs(30, 3)]
    _, current, _ = run(scores)
    alert = current[AlertKey("alliance_rupture", "srs", None)]
    acknowledged = apply_command(alert, command(alert, "acknowledge"), LATER)
    assert isinstance(acknowledged, AlertTransition)
    replayed = replay(scores, rules=RULES, now=LATER)
    assert reconcile([acknowledged.alert], replayed.alerts, now=LATER) == []
    late = srs(38, 0)  # an intake SRS, sent late: the evidence of session 3 now has a z-score
    replayed = replay([*scores, late], rules=RULES, now=LATER)
    moved = reconcile([acknowledged.alert], replayed.alerts, now=LATER)
    assert len(moved) == 1 and moved[0].transition == "updated" and moved[0].alert.status == "acknowledged"
    assert "z" in moved[0].alert.evidence[-1].values and not moved[0].notify
    assert moved[0].alert.alert_id == alert.alert_id and moved[0].alert.opened_at == alert.opened_at


def test_reconcile_raises_what_only_the_replay_found() -> None:
    replayed = replay([srs(38, 1), srs(31, 2)], rules=RULES, now=LATER)
    transitions = reconcile([], replayed.alerts, now=LATER)
    assert [t.transition for t in transitions] == ["raised"] and transitions[0].notify
    assert transitions[0].alert.version == 1


def test_a_repair_evaluated_before_the_rupture_it_repairs_leaves_what_in_order_evaluation_leaves() -> None:
    """Two replicas: the session-3 SRS (back to 38) is evaluated before the session-2 SRS (31). The
    replay finds a rupture raised and repaired in between: the record gets it, and nobody is notified."""
    in_order = [srs(38, 1), srs(31, 2), srs(38, 3)]
    _, _, expected = run(in_order)
    _, _, arrived_log = run([in_order[0], in_order[2]])
    assert arrived_log == []
    replayed = replay(in_order, rules=RULES, now=NOW)
    transitions = reconcile([], replayed.alerts, now=NOW, history=replayed.transitions)
    assert [(t.transition, t.alert.version, t.notify) for t in transitions] == [("raised", 1, False),
                                                                                ("resolved", 2, False)]
    assert [t.alert for t in transitions] == [t.alert for t in expected]
    assert reconcile([expected[-1].alert], replayed.alerts, now=NOW, history=replayed.transitions) == []
