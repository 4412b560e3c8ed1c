"""What a therapist reads: one short notification per transition that needs their attention."""

from __future__ import annotations

from shared.contracts.alert import AlertTransition, Notification

HEADLINES = {
    "critical_item": "Risk item endorsed",
    "alliance_rupture": "Alliance rupture",
    "reliable_deterioration": "Reliable deterioration",
    "not_on_track": "Not on track",
}


def notification_for(transition: AlertTransition) -> Notification | None:
    if not transition.notify:
        return None
    alert = transition.alert
    headline = HEADLINES[alert.kind] + (f" ({alert.subscale})" if alert.subscale else "")
    if transition.transition == "escalated":
        headline += ": not repaired"
    if alert.priority_raised:
        headline = "PRIORITY " + headline + " with a falling alliance"
    evidence = alert.evidence[-1].summary if alert.evidence else ""
    if transition.reason and transition.transition == "escalated":
        evidence = f"{evidence} ({transition.reason})"
    return Notification(
        alert_id=alert.alert_id, kind=alert.kind, severity=alert.severity, transition=transition.transition,
        client_id=alert.client_id, episode_id=alert.episode_id, headline=headline, evidence=evidence,
        prompt=alert.repair_prompt,
    )
