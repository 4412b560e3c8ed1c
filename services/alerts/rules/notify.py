"""What a therapist reads: one short notification per transition that warrants one.

Warranting transitions (the engine sets `AlertTransition.notify`): an alert raised; a rupture
escalated as unrepaired; a raised priority; a more severe update; every new critical-item finding.
Plain evidence updates, resolutions and clinicians' own commands notify nobody.

Headline: the finding in one line ("Alliance drop (bond): SRS 31, down from 38 last session").
Evidence: the numbers behind it and the rule that fired. Prompt: what to try next session. Only
pseudonymous ids and clinical labels: never item wording."""

from __future__ import annotations

from rapport.shared.contracts.alert import Alert, AlertTransition, Evidence, Notification

TITLES = {
    "critical_item": "Risk item endorsed",
    "alliance_rupture": "Alliance rupture",
    "reliable_deterioration": "Reliable deterioration",
    "not_on_track": "Not on track",
    "disengagement": "Disengagement",
}

# Evidence values worth a therapist's ten seconds, in reading order, with their words.
SHOWN = [
    ("session", "session {}"),
    ("previous", "previous {}"),
    ("baseline", "baseline {}"),
    ("concern_cutoff", "concern cutoff {}"),
    ("own_mean", "own mean {}"),
    ("own_sd", "own SD {}"),
    ("own_sessions", "over {} earlier sessions"),
    ("z", "z {}"),
    ("reliable_change", "reliable change {}"),
    ("level_to_regain", "repaired at {} or above"),
    ("checkpoint", "checkpoint session {}"),
    ("expected", "expected {}"),
    ("boundary", "off track beyond {}"),
    ("episodes_in_cell", "from {} earlier episodes"),
]


def notification_for(transition: AlertTransition) -> Notification | None:
    if not transition.notify:
        return None
    alert = transition.alert
    headline, evidence = words_for(transition)
    return Notification(
        alert_id=alert.alert_id, kind=alert.kind, severity=alert.severity, transition=transition.transition,
        client_id=alert.client_id, episode_id=alert.episode_id, headline=headline, evidence=evidence,
        prompt=alert.repair_prompt,
    )


def with_words(transition: AlertTransition) -> AlertTransition:
    """The transition as published: with its headline and evidence in words, so what a worklist shows
    is what a notification says."""
    headline, evidence = words_for(transition)
    return transition.model_copy(update={"headline": headline, "evidence_words": evidence})


def words_for(transition: AlertTransition) -> tuple[str, str]:
    alert = transition.alert
    latest = alert.evidence[-1] if alert.evidence else None
    return _headline(transition, alert, latest), _evidence(transition, alert, latest)


def _headline(transition: AlertTransition, alert: Alert, latest: Evidence | None) -> str:
    part = f" ({alert.subscale})" if alert.subscale else ""
    finding = latest.summary if latest else TITLES[alert.kind] + part
    if alert.priority_raised:
        finding = f"Priority, not on track with a falling alliance. {finding}"
    return finding


def _evidence(transition: AlertTransition, alert: Alert, latest: Evidence | None) -> str:
    said: list[str] = []
    if transition.reason:
        said.append(transition.reason[0].upper() + transition.reason[1:] + ".")
    if latest is not None:
        numbers = [words.format(_plain(latest.values[key])) for key, words in SHOWN if key in latest.values]
        name = str(latest.values.get("instrument_name", latest.instrument))
        if alert.subscale:  # the part's own score, not the total
            name = f"{name} {alert.subscale}"
        shown = latest.values.get("value", latest.score) if alert.subscale else latest.score
        line = f"{name} {_plain(shown)} on {latest.administered_at.date().isoformat()}"
        if latest.instrument == "attendance":  # rules/attendance.py: sessions, not a score
            last = str(latest.values.get("last_attended_at", ""))[:10] or "none recorded"
            line = f"Missed in a row: {_plain(latest.score)}; last attended session: {last}"
        items = latest.values.get("items") or {}
        thresholds = latest.values.get("thresholds") or {}
        numbers += [f"item {i} = {_plain(v)} (threshold {_plain(thresholds.get(i, '?'))})" for i, v in items.items()]
        said.append(", ".join([line, *numbers]) + ".")
        if latest.values.get("sudden_loss"):
            said.append("Possible sudden loss: the sessions after it will tell.")
        if latest.values.get("risk_checked") is False:
            said.append("Risk items could not be checked on this submission.")
        said.append(f"Rule {latest.rule_id} v{latest.rule_version} ({', '.join(latest.sources)}).")
    return " ".join(said)


def _plain(value: object) -> str:
    if isinstance(value, float):
        return f"{round(value, 2):g}"
    return str(value)
