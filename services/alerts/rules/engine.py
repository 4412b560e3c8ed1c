"""evaluate(state, score, open alerts) -> new state, alert transitions, notifications. Pure.

No broker, database, clock or randomness: time comes in as `now`, alert ids are derived (uuid5).

1. The episode state is read as it stood before the score, less the bookkeeping of alerts that are
   no longer open (a clinician resolved them by hand).
2. Every check (`CHECKS`) judges the score against that state: findings and clearings per alert key.
3. The lifecycle: a finding for a key with no open alert raises one; for an open alert it updates it
   (the worse severity stands); a clearing resolves the open alert ('repaired', 'back_on_track',
   'no_longer_deteriorated'). Critical-item alerts are only ever resolved by hand.
4. Rupture follow-up: each further session of a series with an open rupture counts; after k
   sessions without repair the alert is escalated once (status open, severity high, `escalated`,
   a notification). A later repair still resolves it as repaired.
5. Priority: an open not_on_track alert together with a falling alliance (an open rupture, or the
   latest alliance total below the client's own mean of the earlier ones) raises the priority of
   the not_on_track and rupture alerts; it is lowered again, quietly, when that no longer holds.
6. The state moves on: series stats, session count, rupture and sudden-loss bookkeeping.

Scores must come in administration order. A late (administered before the state's latest) or
amended score is handled by `replay` over the episode's stored scores, and `reconcile` turns the
stored alerts into what the replay found (see there)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from rapport.services.alerts.rules.alliance import AllianceRuptures, parts_of
from rapport.services.alerts.rules.conditions import (
    SEVERITY_ORDER,
    Check,
    Clearing,
    Context,
    Finding,
    evidence,
    points,
    worst,
)
from rapport.services.alerts.rules.lifecycle import (
    ENGINE,
    EVIDENCE_KEPT,
    Changes,
    TransitionName,
    more_severe,
    opened,
    resolved,
    with_evidence,
)
from rapport.services.alerts.rules.notify import notification_for
from rapport.services.alerts.rules.outcome import NotOnTrackCheckpoints, ReliableDeteriorations
from rapport.services.alerts.rules.risk import CriticalItems
from rapport.services.alerts.rules.ruleset import RuleSet
from rapport.services.alerts.rules.state import AlertKey, EpisodeState, Rupture, SuddenLoss, series_name
from rapport.services.alerts.rules.trajectory import NO_TRAJECTORIES, ExpectedTrajectory, FittedTrajectory
from rapport.shared.contracts.alert import Alert, AlertTransition, Evidence, Notification
from rapport.shared.contracts.attendance import AttendanceSummary
from rapport.shared.contracts.score import ScoreComputed
from rapport.shared.instruments import Registry, load_registry

ATTENDANCE_RULE = "disengagement"  # its evidence on a rupture alert is kept by reconcile
CHECKS: tuple[Check, ...] = (CriticalItems(), AllianceRuptures(), ReliableDeteriorations(), NotOnTrackCheckpoints(),
                             ExpectedTrajectory())


@dataclass(frozen=True)
class Evaluation:
    state: EpisodeState
    transitions: list[AlertTransition]
    notifications: list[Notification] = field(default_factory=list)
    risk_unchecked: bool = False  # the score's critical items could not be checked: report it


def evaluate(state: EpisodeState | None, score: ScoreComputed, open_alerts: Mapping[AlertKey, Alert], *,
             rules: RuleSet, now: datetime, checks: Sequence[Check] = CHECKS,
             trajectories: Mapping[str, FittedTrajectory] = NO_TRAJECTORIES,
             registry: Registry | None = None) -> Evaluation:
    """Evaluate one score of an episode, in administration order, against its open alerts.

    `trajectories`: the tenant's expected-trajectory fits by instrument (none: checkpoints only).
    `registry`: the instrument registry the rules read what an instrument is for (screeners) and its
    critical items' grading from; the shipped one when not given."""
    open_now = {AlertKey.of(a): a for a in open_alerts.values() if a.status != "resolved"}
    before = _followed_only(state or EpisodeState(latest_at=score.administered_at), open_now)
    day = score.administered_at.date()
    new_session = before.last_session_day is None or day > before.last_session_day
    sessions = before.sessions + (1 if new_session else 0)
    context = Context(rules, score.session_number if score.session_number is not None else sessions, trajectories,
                      registry or load_registry())
    # the tenant's policy may turn a rule off for this instrument or for the tenant: it then says nothing,
    # and an alert it opened earlier stays as it stands (a later policy never rewrites it)
    verdicts = [check.judge(score, before, context) for check in checks
                if rules.runs(check.rule, score.score.instrument)]
    findings = _by_key(f for v in verdicts for f in v.findings)
    clearings: dict[AlertKey, Clearing] = {c.key: c for v in verdicts for c in v.clearings if c.key not in findings}

    changes = Changes(now, rules.policy.version)
    ruptures = dict(before.ruptures)
    losses = dict(before.sudden_losses)
    for key, found in findings.items():
        alert = open_now.get(key)
        if alert is None:
            after = opened(score, found[0], now)
            for more in found[1:]:
                after = with_evidence(after, more, score.clinician_id)
            changes.record(None, after, "raised", notify=True)
        else:
            after = alert
            for finding in found:
                after = with_evidence(after, finding, score.clinician_id)
            worse = more_severe(after, alert)
            changes.record(alert, after, "updated", notify=worse or key.kind == "critical_item",
                           reason=f"severity raised from {alert.severity} to {after.severity}" if worse else None)
        open_now[key] = after
        rupture = next((f.rupture for f in found if f.rupture), None)
        if key.kind == "alliance_rupture" and rupture is not None and key.series not in ruptures:
            ruptures[key.series] = rupture
        elif key.kind == "alliance_rupture" and key.series in ruptures:
            held = ruptures[key.series]
            # a part that drops while the rupture is open joins it: it too must be back before it is repaired
            joined = {**(rupture.parts_to_regain if rupture is not None else {}), **held.parts_to_regain}
            if held.repair_held or joined != held.parts_to_regain:  # dropped again, or a further part
                ruptures[key.series] = held.model_copy(update={"repair_held": False, "parts_to_regain": joined})
        loss = next((f.sudden_loss for f in found if f.sudden_loss), None)
        if key.kind == "reliable_deterioration" and loss is not None and key.instrument not in losses:
            losses[key.instrument] = loss
    for key, clearing in clearings.items():
        alert = open_now.pop(key, None)
        if alert is None:
            continue
        if key.kind == "alliance_rupture" and before.attendance_pending and key.series in ruptures:
            # the alliance is back but the client has missed sessions since last attending: repaired only
            # once they attend again (rules/attendance.py resolves it then)
            open_now[key] = alert
            if not ruptures[key.series].repair_held:
                ruptures[key.series] = ruptures[key.series].model_copy(update={"repair_held": True})
                changes.record(alert, alert, "updated", reason=f"{clearing.reason}; counted as repaired once the "
                                                                "client attends again")
            continue
        changes.record(alert, resolved(alert, clearing.resolution, clearing.reason), "resolved",
                       reason=clearing.reason)
        if key.kind == "alliance_rupture":
            ruptures.pop(key.series, None)
        if key.kind == "reliable_deterioration":
            losses.pop(key.instrument, None)
    _follow_ruptures(score, before, ruptures, open_now, changes, context)
    after_state = _advance(before, score, rules, ruptures, losses, sessions, new_session)
    _prioritise(after_state, open_now, changes, rules)
    transitions = changes.transitions()
    notifications = [n for t in transitions if (n := notification_for(t)) is not None]
    return Evaluation(after_state, transitions, notifications, risk_unchecked=not score.score.risk_checked)


def _by_key(findings: Iterable[Finding]) -> dict[AlertKey, list[Finding]]:
    """Findings per key, the most severe first (several checks may speak about one key)."""
    grouped: dict[AlertKey, list[Finding]] = {}
    for f in findings:
        grouped.setdefault(f.key, []).append(f)
    return {k: sorted(v, key=lambda f: -SEVERITY_ORDER.index(f.severity)) for k, v in grouped.items()}


def _followed_only(state: EpisodeState, open_now: Mapping[AlertKey, Alert]) -> EpisodeState:
    """Drop rupture and sudden-loss bookkeeping whose alert is no longer open (resolved by hand)."""
    ruptures = {s: r for s, r in state.ruptures.items() if AlertKey("alliance_rupture", *_split(s)) in open_now}
    losses = {i: loss for i, loss in state.sudden_losses.items()
              if AlertKey("reliable_deterioration", i, None) in open_now}
    if len(ruptures) == len(state.ruptures) and len(losses) == len(state.sudden_losses):
        return state
    return state.model_copy(update={"ruptures": ruptures, "sudden_losses": losses})


def _split(series: str) -> tuple[str, str | None]:
    instrument, _, part = series.partition(":")
    return instrument, part or None


def _follow_ruptures(score: ScoreComputed, before: EpisodeState, ruptures: dict[str, Rupture],
                     open_now: dict[AlertKey, Alert], changes: Changes, context: Context) -> None:
    """Count a further session for each rupture open before this score; escalate once after k."""
    rules = context.rules
    k = rules.alliance_rupture.parameters.repair_within_sessions.value
    instrument = score.score.instrument
    in_score = {instrument, *(series_name(instrument, p) for p in score.score.subscales)}
    for series, rupture in before.ruptures.items():
        if series not in in_score or series not in ruptures:
            continue  # not measured this session, or repaired just now
        key = AlertKey("alliance_rupture", *_split(series))
        alert = open_now.get(key)
        if alert is None:
            continue
        followed = ruptures[series].model_copy(update={"sessions_since": rupture.sessions_since + 1})
        if followed.sessions_since >= k and not followed.escalated and not followed.repair_held:
            followed = followed.model_copy(update={"escalated": True})
            current = changes.latest(alert)
            unrepaired = _unrepaired(score, key, current, followed, context)
            after = current.model_copy(update={
                "escalated": True, "status": "open",
                "severity": worst(current.severity, rules.alliance_rupture.severity.unrepaired),
                "evidence": [*current.evidence, unrepaired][-EVIDENCE_KEPT:],
            })
            changes.record(alert, after, "escalated", notify=True, reason=(
                f"not repaired after {followed.sessions_since} further sessions "
                f"(pre-rupture level {points(rupture.level_to_regain)})"))
            open_now[key] = after
        ruptures[series] = followed


def _unrepaired(score: ScoreComputed, key: AlertKey, alert: Alert, rupture: Rupture, context: Context) -> Evidence:
    """The evidence of an escalation: this session's score against the pre-rupture level."""
    value = score.score.total if key.subscale is None else score.score.subscales[key.subscale]
    named = ", ".join(alert.parts_named)
    name = context.rules.name(key.instrument) + (f" {key.subscale}" if key.subscale else "")
    summary = (f"Rupture not repaired{f' ({named})' if named else ''}: {name} {points(value)} after "
               f"{rupture.sessions_since} further sessions, pre-rupture level {points(rupture.level_to_regain)}")
    values = {"value": value, "level_to_regain": rupture.level_to_regain, "session": context.session,
              "sessions_since_rupture": rupture.sessions_since, "opened_by": rupture.opened_by}
    return evidence(context, context.rules.alliance_rupture, score, summary, values)


def _advance(before: EpisodeState, score: ScoreComputed, rules: RuleSet, ruptures: dict[str, Rupture],
             losses: dict[str, SuddenLoss], sessions: int, new_session: bool) -> EpisodeState:
    instrument, kind = score.score.instrument, score.score.kind
    values: list[tuple[str | None, float]] = [(None, score.score.total), *score.score.subscales.items()]
    if kind == "alliance" and not score.score.subscales:
        values += list(parts_of(score, rules.alliance_rupture).items())  # SRS items read as goal/task/bond
    series = dict(before.series)
    for part, value in values:
        name = series_name(instrument, part)
        series[name] = before.series_of(name).add(value, kind)
    day = score.administered_at.date()
    return before.model_copy(update={
        "latest_at": max(before.latest_at, score.administered_at),
        "sessions": sessions,
        "last_session_day": day if new_session else before.last_session_day,
        "series": series,
        "ruptures": ruptures,
        "sudden_losses": losses,
    })


def falling_alliance(state: EpisodeState, rules: RuleSet) -> list[str]:
    """Alliance totals whose latest score is below the client's own mean of the earlier ones."""
    needed = rules.alliance_rupture.parameters.min_earlier_sessions.value
    falling = []
    for name, s in sorted(state.series.items()):
        mean = s.mean_before_previous()
        if s.kind == "alliance" and ":" not in name and s.running.n - 1 >= needed and mean is not None \
                and s.previous is not None and s.previous < mean:
            falling.append(rules.name(name))
    return falling


def _prioritise(state: EpisodeState, open_now: dict[AlertKey, Alert], changes: Changes, rules: RuleSet) -> None:
    if not rules.runs(rules.priority.id):
        return
    ruptured = sorted({rules.name(k.instrument) for k in open_now if k.kind == "alliance_rupture"})
    below_mean = falling_alliance(state, rules)
    off_track = any(k.kind == "not_on_track" for k in open_now)
    raise_it = off_track and bool(ruptured or below_mean)
    why = "; ".join([*(f"open alliance rupture on {n}" for n in ruptured),
                     *(f"{n} below the client's own mean" for n in below_mean if n not in ruptured)])
    for key, alert in list(open_now.items()):
        if key.kind not in ("not_on_track", "alliance_rupture"):
            continue
        current = changes.latest(alert)
        if current.priority_raised == raise_it:
            continue
        after = current.model_copy(update={"priority_raised": raise_it})
        rule = f"rule {rules.priority.id} v{rules.priority.version}"
        reason = (f"priority raised: not on track with a falling alliance ({why}; {rule})" if raise_it
                  else f"priority lowered: the alliance is no longer falling or the client is back on track ({rule})")
        changes.record(alert, after, "updated", notify=raise_it, reason=reason)
        open_now[key] = after


# --- late and amended scores ------------------------------------------------------------------


@dataclass
class Replayed:
    """An episode evaluated from the start: its state, and each alert as it last stood (latest last)."""

    state: EpisodeState | None
    alerts: dict[str, Alert] = field(default_factory=dict)
    transitions: list[AlertTransition] = field(default_factory=list)


def replay(scores: Sequence[ScoreComputed], *, rules: RuleSet, now: datetime, checks: Sequence[Check] = CHECKS,
           trajectories: Mapping[str, FittedTrajectory] = NO_TRAJECTORIES, registry: Registry | None = None,
           attendance: AttendanceSummary | None = None) -> Replayed:
    """Fold `evaluate` over the episode's scores in administration order from an empty state.

    The latest revision of each submission counts. Clinicians' commands are not replayed: they
    are kept by `reconcile`. `attendance`, the episode's attendance summary as it stands, is kept
    in the state throughout (it is not the scores' to change)."""
    latest: dict[str, ScoreComputed] = {}
    for s in scores:
        if s.submission_id not in latest or latest[s.submission_id].revision < s.revision:
            latest[s.submission_id] = s
    episode = EpisodeAlerts(state=None)
    result = Replayed(state=None)
    for score in sorted(latest.values(), key=lambda s: (s.administered_at, s.submission_id)):
        if episode.state is None and attendance is not None:
            episode.state = EpisodeState(latest_at=score.administered_at, attendance=attendance)
        evaluation = episode.take(score, rules=rules, now=now, checks=checks, trajectories=trajectories,
                                  registry=registry)
        result.transitions += evaluation.transitions
        for t in evaluation.transitions:
            result.alerts.pop(t.alert.alert_id, None)
            result.alerts[t.alert.alert_id] = t.alert
    result.state = episode.state
    return result


@dataclass
class EpisodeAlerts:
    """One episode as the alerts service changes it: its compact state and its open alerts.

    `take` evaluates the next score in administration order; `replay` evaluates the episode again
    from its first score (a late, amended or re-placed score) and reconciles what it finds with the
    alerts already stored, so clinicians' acknowledgements are kept."""

    state: EpisodeState | None
    open: dict[AlertKey, Alert] = field(default_factory=dict)

    @classmethod
    def of(cls, state: EpisodeState | None, open_alerts: Iterable[Alert]) -> EpisodeAlerts:
        return cls(state, {AlertKey.of(a): a for a in open_alerts})

    def needs_replay(self, scores: Sequence[ScoreComputed]) -> bool:
        """True when these scores (in arrival order) cannot all be taken in turn: one is older than
        what the episode has seen, amended, or re-placed by scoring after a late score."""
        latest = self.state.latest_at if self.state is not None else None
        for score in scores:
            if latest is not None and (score.administered_at < latest or score.supersedes_revision
                                       or score.re_placed_by):
                return True
            latest = score.administered_at if latest is None else max(latest, score.administered_at)
        return False

    def take(self, score: ScoreComputed, *, rules: RuleSet, now: datetime, checks: Sequence[Check] = CHECKS,
             trajectories: Mapping[str, FittedTrajectory] = NO_TRAJECTORIES,
             registry: Registry | None = None) -> Evaluation:
        evaluation = evaluate(self.state, score, self.open, rules=rules, now=now, checks=checks,
                              trajectories=trajectories, registry=registry)
        self.state = evaluation.state
        for t in evaluation.transitions:
            if t.alert.status == "resolved":
                self.open.pop(AlertKey.of(t.alert), None)
            else:
                self.open[AlertKey.of(t.alert)] = t.alert
        return evaluation

    @classmethod
    def replay(cls, history: Sequence[ScoreComputed], alerts: Iterable[Alert], *, rules: RuleSet, now: datetime,
               trajectories: Mapping[str, FittedTrajectory] = NO_TRAJECTORIES,
               registry: Registry | None = None,
               attendance: AttendanceSummary | None = None) -> tuple[EpisodeAlerts, list[AlertTransition]]:
        """The episode evaluated again from `history` (every stored score), and the transitions that
        turn `alerts` (every alert of the episode as it now stands, later versions last) into what
        the replay found."""
        replayed = replay(history, rules=rules, now=now, trajectories=trajectories, registry=registry,
                          attendance=attendance)
        latest = {a.alert_id: a for a in alerts}
        found = reconcile(list(latest.values()), replayed.alerts, now=now, history=replayed.transitions,
                          policy_version=rules.policy.version)
        latest |= {c.alert.alert_id: c.alert for c in found}
        return cls.of(replayed.state, (a for a in latest.values() if a.status != "resolved")), found


def reconcile(stored: Sequence[Alert], replayed: Mapping[str, Alert], *, now: datetime,
              history: Sequence[AlertTransition] = (), policy_version: int = 0) -> list[AlertTransition]:
    """The transitions that turn the stored alerts into what a replay found, key by key.

    Alerts are matched by key (kind, instrument, subscale), not by id, because a late score can
    change which submission opened an alert. Clinicians' work is kept: a stored alert keeps its
    id, status (acknowledged stays acknowledged, unless newly escalated) and opening time, and
    resolved alerts stay resolved. Per key:
    - stored open, replay open: the stored alert takes the replay's severity, evidence, prompt,
      escalation and priority ('updated', or 'escalated' when newly escalated; notified when
      escalated, more severe or newly prioritised); nothing when nothing changed;
    - stored open, replay none open: resolved with the replay's resolution for that key when its
      last alert there was resolved, else 'superseded' (its evidence vanished);
    - replay open, stored none open: raised (and notified), unless an alert with that id is
      already stored resolved (a clinician closed it, or it resolved before): that is left alone
      and the engine drops its bookkeeping at the next score;
    - an alert the replay opened and resolved again, with an id not stored, happened in between:
      its transitions from the replay (`history`) are emitted as they were, without notifying
      anyone (it is over), so the record holds what in-order evaluation would have left. With
      several replicas a repair can be evaluated before the rupture it repairs.
    History comes first, then resolutions, updates and raises, so one key never has two open alerts.

    `policy_version`: the tenant's clinical policy the replay ran under. Every transition says it, and the
    evidence a stored alert gathered under another version is kept beside the replay's: a new policy never
    rewrites what an earlier one found (evidence from before policies counts as version 0, the defaults)."""
    known = {a.alert_id for a in stored}
    over = {a.alert_id for a in replayed.values() if a.status == "resolved" and a.alert_id not in known}
    past = [t.model_copy(update={"notify": False}) for t in history if t.alert.alert_id in over]
    # a disengagement alert comes from the appointments, never from scores: a replay leaves it alone
    stored_open = {AlertKey.of(a): a for a in stored if a.status != "resolved" and a.kind != ATTENDANCE_RULE}
    last_by_key: dict[AlertKey, Alert] = {}
    for alert in replayed.values():
        last_by_key[AlertKey.of(alert)] = alert  # in order of their last change: the latest wins
    replay_open = {k: a for k, a in last_by_key.items() if a.status != "resolved"}
    resolutions: list[AlertTransition] = []
    updates: list[AlertTransition] = []
    raises: list[AlertTransition] = []
    for key, old in sorted(stored_open.items(), key=_order):
        new = replay_open.get(key)
        if new is None:
            last = last_by_key.get(key)
            if last is not None and last.resolution is not None:
                closed = resolved(old, last.resolution, last.resolved_reason or "re-evaluated")
            else:
                closed = resolved(old, "superseded", "its evidence changed (late or amended submission)")
            resolutions.append(_moved(old, closed, "resolved", now, closed.resolved_reason, policy_version))
            continue
        # attendance evidence (rules/attendance.py) is not the scores' to remove: a replay keeps it
        attended = [e for e in old.evidence if e.rule_id == ATTENDANCE_RULE]
        # what an earlier clinical policy found is not this one's to remove either
        earlier = [e for e in old.evidence
                   if e.rule_id != ATTENDANCE_RULE and (e.policy_version or 0) != policy_version]
        merged = old.model_copy(update={
            "severity": worst(new.severity, old.severity) if attended else new.severity,
            "evidence": sorted([*earlier, *new.evidence, *attended],
                               key=lambda e: e.administered_at)[-EVIDENCE_KEPT:],
            "repair_prompt": old.repair_prompt if attended else new.repair_prompt,
            "escalated": new.escalated or bool(attended), "priority_raised": new.priority_raised,
            "clinician_id": new.clinician_id or old.clinician_id, "policy_version": new.policy_version,
            "status": "open" if new.escalated and not old.escalated else old.status,
        })
        if merged == old:
            continue
        escalated = new.escalated and not old.escalated
        notify = escalated or more_severe(merged, old) or (new.priority_raised and not old.priority_raised)
        updates.append(_moved(old, merged, "escalated" if escalated else "updated", now,
                              "re-evaluated after a late or amended submission", policy_version, notify=notify))
    for key, new in sorted(replay_open.items(), key=_order):
        if key in stored_open or new.alert_id in known:
            continue
        raised = new.model_copy(update={"version": 1, "opened_at": now, "updated_at": now})
        raises.append(AlertTransition(transition="raised", alert=raised, by=ENGINE, at=now, notify=True,
                                      reason="found on re-evaluation after a late or amended submission"))
    return [*past, *resolutions, *updates, *raises]


def _order(item: tuple[AlertKey, Alert]) -> tuple[str, str, str]:
    key = item[0]
    return key.kind, key.instrument, key.subscale or ""


def _moved(old: Alert, new: Alert, transition: TransitionName, now: datetime, reason: str | None,
           policy_version: int, *, notify: bool = False) -> AlertTransition:
    alert = new.model_copy(update={"version": old.version + 1, "updated_at": now, "policy_version": policy_version})
    return AlertTransition(transition=transition, alert=alert, by=ENGINE, at=now, reason=reason, notify=notify)
