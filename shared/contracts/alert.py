"""Alert lifecycle events, per-clinician notifications and the commands clinicians send back."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from rapport.shared.contracts.tenancy import PseudonymousId, SubjectToken, TenantId

AlertKind = Literal["critical_item", "alliance_rupture", "reliable_deterioration", "not_on_track", "disengagement"]
Severity = Literal["critical", "high", "medium", "low"]
AlertStatus = Literal["open", "acknowledged", "resolved"]
Resolution = Literal[
    "repaired", "unrepaired", "back_on_track", "no_longer_deteriorated", "cleared", "by_hand", "superseded",
    "attending_again", "episode_ended",
]


class Evidence(BaseModel):
    """Why the rule fired: the scores it looked at, the baseline, the threshold, the rule and version."""

    model_config = ConfigDict(frozen=True)

    rule_id: str
    rule_version: str
    summary: str = Field(description="one sentence a therapist reads in ten seconds")
    submission_id: str
    administered_at: AwareDatetime
    instrument: str
    score: float
    values: dict[str, Any] = Field(default_factory=dict, description="threshold, baseline, previous, z, ...")
    sources: list[str] = Field(default_factory=list)
    policy_version: int | None = Field(default=None, ge=0, description=(
        "the version of the tenant's clinical policy the rule ran under (0: none set, the sourced defaults); "
        "absent on evidence from before clinical policies"))


class Alert(BaseModel):
    """The state of one alert as it stands after a transition."""

    model_config = ConfigDict(frozen=True)

    alert_id: str = Field(max_length=64)
    tenant: TenantId
    kind: AlertKind
    severity: Severity
    status: AlertStatus
    priority_raised: bool = Field(default=False, description="not on track together with a falling alliance")
    escalated: bool = Field(default=False, description="a rupture not repaired within the rule's sessions")
    client_id: PseudonymousId
    episode_id: PseudonymousId
    clinician_id: SubjectToken | None = None
    instrument: str
    subscale: str | None = None
    opened_at: AwareDatetime
    updated_at: AwareDatetime
    evidence: list[Evidence]
    repair_prompt: str | None = None
    resolution: Resolution | None = None
    resolved_reason: str | None = None
    version: int = Field(ge=1)
    policy_version: int | None = Field(default=None, ge=0, description=(
        "the version of the tenant's clinical policy the rules ran under when they last moved this alert (0: none "
        "set, the sourced defaults); a later policy never rewrites it. Absent on alerts from before clinical "
        "policies"))

    @property
    def parts_named(self) -> tuple[str, ...]:
        """The alliance parts the alert is about: its subscale (alerts raised per part, before rule version 3),
        else the parts that dropped when it opened, else the weakest part a drop of the total named."""
        if self.subscale:
            return (self.subscale,)
        opening = self.evidence[0].values if self.evidence else {}
        dropped = opening.get("parts")
        if isinstance(dropped, dict) and dropped:
            return tuple(str(part) for part in dropped)
        weakest = opening.get("weakest_part")
        return (str(weakest),) if weakest else ()


class AlertTransition(BaseModel):
    """`alert.raised`, `alert.updated` or `alert.resolved`: who or what moved it, and when."""

    model_config = ConfigDict(frozen=True)

    transition: Literal["raised", "updated", "acknowledged", "resolved", "escalated"]
    alert: Alert
    by: str = Field(description="`rapport/alerts` for rules, else the clinician id from the command")
    at: AwareDatetime
    reason: str | None = None
    notify: bool = Field(default=False, description="this transition warrants a notification to the clinician")
    headline: str | None = Field(default=None, description="the finding in one line, as a therapist reads it; set "
                                                           "by the alerts service on every transition it publishes")
    evidence_words: str | None = Field(default=None, description="the numbers behind it and the rule, in words")


class Notification(BaseModel):
    """`rapport.<tenant>.notify.<clinician>`: one per alert transition that needs a therapist."""

    model_config = ConfigDict(frozen=True)

    alert_id: str = Field(max_length=64)
    kind: AlertKind
    severity: Severity
    transition: str
    client_id: PseudonymousId
    episode_id: PseudonymousId
    headline: str
    evidence: str
    prompt: str | None = None


class AlertCommand(BaseModel):
    """Inbound on `rapport.<tenant>.in.alert-commands`."""

    model_config = ConfigDict(extra="forbid")

    command_id: PseudonymousId
    alert_id: str = Field(max_length=64)
    action: Literal["acknowledge", "resolve"]
    by: PseudonymousId
    reason: str | None = Field(default=None, max_length=500)


class AlertCommandRejected(BaseModel):
    """`rapport.<tenant>.alert-command.rejected`: the command changed nothing, and why."""

    model_config = ConfigDict(frozen=True)

    command_id: str | None = None
    alert_id: str | None = None
    reason: str


class EvaluationCompleted(BaseModel):
    """`rapport.<tenant>.evaluation.completed`: the alerts service has evaluated one score.

    The last event of every accepted submission's journey, so callers (and `rapport bench`) know
    when the pipeline is done with it, alert or not.
    """

    model_config = ConfigDict(frozen=True)

    submission_id: str
    revision: int
    instrument: str
    total: float
    alert_ids: list[str] = Field(default_factory=list)
    transitions: list[str] = Field(default_factory=list)
