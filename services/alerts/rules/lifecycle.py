"""The alert lifecycle: open -> acknowledged -> resolved, by rules and by clinicians' commands.

At most one open (open or acknowledged) alert per episode, kind, instrument and subscale: new
evidence updates it. One evaluation moves an alert at most once (one transition, version + 1), so
new evidence, an escalation and a raised priority found together are one `escalated` transition.

Alert ids are uuid5 of tenant, client, episode, kind, instrument, subscale and the submission that
opened the alert: a replay, a redelivery or another replica derives the same id."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from rapport.services.alerts.rules.conditions import SEVERITY_ORDER, Finding, worst
from rapport.services.alerts.rules.state import AlertKey
from rapport.shared.contracts.alert import Alert, AlertCommand, AlertTransition, Resolution
from rapport.shared.contracts.score import ScoreComputed

ENGINE = "rapport/alerts"
ALERT_NAMESPACE = uuid.UUID("b8a4f5de-2f55-4c39-9f0e-5d7f1c2a9e41")
EVIDENCE_KEPT = 10  # the latest pieces of evidence an alert carries: its size does not grow with history
TransitionName = Literal["raised", "updated", "acknowledged", "resolved", "escalated"]
_PRECEDENCE: dict[str, int] = {"updated": 0, "escalated": 1, "resolved": 2, "raised": 3}


def alert_id(tenant: str, client_id: str, episode_id: str, key: AlertKey, opened_by: str) -> str:
    name = "|".join([tenant, client_id, episode_id, key.kind, key.instrument, key.subscale or "", opened_by])
    return str(uuid.uuid5(ALERT_NAMESPACE, name))


def opened(score: ScoreComputed, finding: Finding, now: datetime) -> Alert:
    key = finding.key
    return Alert(
        alert_id=alert_id(score.tenant, score.client_id, score.episode_id, key, score.submission_id),
        tenant=score.tenant, kind=key.kind, severity=finding.severity, status="open", client_id=score.client_id,
        episode_id=score.episode_id, clinician_id=score.clinician_id, instrument=key.instrument,
        subscale=key.subscale, opened_at=now, updated_at=now, evidence=[finding.evidence],
        repair_prompt=finding.prompt, version=1,
    )


def with_evidence(alert: Alert, finding: Finding, clinician_id: str | None) -> Alert:
    """New evidence on an open alert: the worse severity stands, the latest prompt and clinician apply."""
    return alert.model_copy(update={
        "severity": worst(alert.severity, finding.severity),
        "evidence": [*alert.evidence, finding.evidence][-EVIDENCE_KEPT:],
        "repair_prompt": finding.prompt or alert.repair_prompt,
        "clinician_id": clinician_id or alert.clinician_id,
    })


def resolved(alert: Alert, resolution: Resolution, reason: str) -> Alert:
    return alert.model_copy(update={"status": "resolved", "resolution": resolution, "resolved_reason": reason})


def more_severe(after: Alert, before: Alert) -> bool:
    return SEVERITY_ORDER.index(after.severity) > SEVERITY_ORDER.index(before.severity)


@dataclass
class _Change:
    before: Alert | None
    alert: Alert
    transition: TransitionName
    notify: bool
    reasons: list[str] = field(default_factory=list)


class Changes:
    """The alerts one evaluation moves, each once: its strongest transition, version + 1."""

    def __init__(self, now: datetime, policy_version: int = 0) -> None:
        self.now = now
        self.policy_version = policy_version  # the tenant's clinical policy the rules ran under
        self._changes: dict[str, _Change] = {}

    def latest(self, alert: Alert) -> Alert:
        change = self._changes.get(alert.alert_id)
        return change.alert if change else alert

    def touched(self, alert: Alert) -> bool:
        return alert.alert_id in self._changes

    def record(self, before: Alert | None, after: Alert, transition: TransitionName, *, notify: bool = False,
               reason: str | None = None) -> None:
        change = self._changes.get(after.alert_id)
        if change is None:
            change = self._changes[after.alert_id] = _Change(before, after, transition, notify)
        else:
            change.alert = after
            change.notify = change.notify or notify
            if _PRECEDENCE[transition] > _PRECEDENCE[change.transition]:
                change.transition = transition
        if reason:
            change.reasons.append(reason)

    def alerts(self) -> list[Alert]:
        return [c.alert for c in self._changes.values()]

    def transitions(self) -> list[AlertTransition]:
        out = []
        for change in self._changes.values():
            version = change.before.version + 1 if change.before else 1
            alert = change.alert.model_copy(update={"version": version, "updated_at": self.now,
                                                    "policy_version": self.policy_version})
            out.append(AlertTransition(transition=change.transition, alert=alert, by=ENGINE, at=self.now,
                                       reason="; ".join(change.reasons) or None, notify=change.notify))
        return out


@dataclass(frozen=True)
class CommandRejected:
    """The command changed nothing; the reason goes back to the clinician."""

    reason: str


def apply_command(alert: Alert, command: AlertCommand, now: datetime) -> AlertTransition | CommandRejected:
    """A clinician acknowledges an open alert, or resolves an open or acknowledged one with a reason."""
    if command.alert_id != alert.alert_id:
        return CommandRejected("the command names another alert")
    if alert.status == "resolved":
        verb = "acknowledge" if command.action == "acknowledge" else "resolve"
        return CommandRejected(f"cannot {verb}: the alert is already resolved ({alert.resolution})")
    reason = (command.reason or "").strip() or None
    if command.action == "acknowledge":
        if alert.status == "acknowledged":
            return CommandRejected("the alert is already acknowledged")
        acknowledged = alert.model_copy(update={"status": "acknowledged", "updated_at": now,
                                                "version": alert.version + 1})
        return AlertTransition(transition="acknowledged", alert=acknowledged, by=command.by, at=now, reason=reason)
    if reason is None:
        return CommandRejected("resolving an alert by hand needs a reason")
    closed = resolved(alert, "by_hand", reason).model_copy(update={"updated_at": now, "version": alert.version + 1})
    return AlertTransition(transition="resolved", alert=closed, by=command.by, at=now, reason=reason)
