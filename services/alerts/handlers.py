"""Computed scores, accepted attendance and clinicians' commands: evaluate the episode, keep the alert
lifecycle, notify."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from rapport.services.alerts.repository import AppointmentKey, EpisodeKey
from rapport.services.alerts.rules import (
    ClinicalPolicy,
    CommandRejected,
    Episode,
    EpisodeAlerts,
    EpisodeState,
    RuleSet,
    applied,
    apply_command,
    judge_attendance,
    notification_for,
    with_words,
)
from rapport.services.alerts.trajectories import TrajectoryFits
from rapport.services.alerts.unit_of_work import AlertRecord, AlertsUnitOfWork
from rapport.shared.contracts.alert import (
    Alert,
    AlertCommand,
    AlertCommandRejected,
    AlertTransition,
    EvaluationCompleted,
)
from rapport.shared.contracts.attendance import (
    AttendanceAccepted,
    AttendanceRecorded,
    AttendanceStatus,
    AttendanceSummary,
    EpisodeEnding,
    ending_id,
)
from rapport.shared.contracts.envelope import CloudEvent, derived_event_id, event_type
from rapport.shared.contracts.problems import Problem
from rapport.shared.contracts.score import ScoreComputed
from rapport.shared.db.delivery import Outgoing
from rapport.shared.instruments import Registry
from rapport.shared.instruments.validation import check_scorable, summary
from rapport.shared.messaging import subjects
from rapport.shared.messaging.consumer import Inbound
from rapport.shared.messaging.publish import cloud_event
from rapport.shared.messaging.retry import PoisonMessage
from rapport.shared.metrics import alert_transitions

SERVICE = "alerts"
SCORE_COMPUTED = event_type("score", "computed")
ATTENDANCE_ACCEPTED = event_type("attendance", "accepted")


class UnusableScore(PoisonMessage):
    """A score.computed event the alerts service cannot use (malformed, another tenant's, not fitting
    its instrument): poison."""


def _key(score: ScoreComputed) -> EpisodeKey:
    return (score.tenant, score.client_id, score.episode_id)


class PolicyRules:
    """The rules under each tenant's clinical policy, built once per policy version: a batch reads its
    tenants' current policies (one read) and gets the rules each evaluation of the batch runs under."""

    CACHED = 1024  # (tenant, version) pairs kept; past that the cache starts again

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self._built: dict[tuple[str, int], RuleSet] = {}

    def under(self, policy: ClinicalPolicy | None) -> RuleSet:
        if policy is None:
            return self.rules
        key = (policy.tenant, policy.version)
        if key not in self._built:
            if len(self._built) >= self.CACHED:
                self._built.clear()
            self._built[key] = applied(self.rules, policy)
        return self._built[key]

    async def for_tenants(self, record: AlertRecord, tenants: Iterable[str]) -> dict[str, RuleSet]:
        wanted = sorted(set(tenants))
        policies = await record.clinical_policies(wanted)
        return {tenant: self.under(policies.get(tenant)) for tenant in wanted}


@dataclass
class Alerting:
    rules: RuleSet
    registry: Registry
    trajectories: TrajectoryFits = field(default_factory=TrajectoryFits)

    def __post_init__(self) -> None:
        self.policies = PolicyRules(self.rules)

    async def __call__(self, uow: AlertsUnitOfWork, messages: Sequence[Inbound]) -> None:
        record, now = uow.record, uow.now
        scores = [self._parse(m) for m in messages]
        by_episode: dict[EpisodeKey, list[ScoreComputed]] = defaultdict(list)
        for score in scores:
            by_episode[_key(score)].append(score)
        # each tenant's clinical policy as it stands now: this batch's evaluations run under it
        rules_of = await self.policies.for_tenants(record, (key[0] for key in by_episode))
        stored = await record.load_episodes(by_episode)
        open_alerts = await record.open_alerts(by_episode)
        fits = await self.trajectories.for_tenants(record, [key[0] for key in by_episode], now)
        await record.remember_scores(scores)
        episodes: dict[EpisodeKey, EpisodeAlerts] = {}
        for key in by_episode:
            _version, document = stored.get(key, (None, None))
            state = EpisodeState.model_validate(document) if document is not None else None
            episodes[key] = EpisodeAlerts.of(state, open_alerts[key])
        replayed = {key for key, episode_scores in by_episode.items() if episodes[key].needs_replay(episode_scores)}
        # one read per table for every episode the batch replays (this batch's scores included)
        histories = await record.episode_scores(replayed)
        stored_alerts = await record.episode_alerts(replayed)
        changes: list[AlertTransition] = []
        events: list[Outgoing] = []
        saved: dict[EpisodeKey, tuple[int | None, dict[str, Any], datetime]] = {}
        for key, episode_scores in by_episode.items():
            episode, trajectories, rules = episodes[key], fits[key[0]], rules_of[key[0]]
            replayed_here = False
            for score in episode_scores:
                if replayed_here:
                    # the replay read every stored score of the episode, this batch's included
                    found: list[AlertTransition] = []
                elif episode.needs_replay([score]):
                    # late, amended or re-placed: evaluate the whole episode again in administration order
                    episode, found = EpisodeAlerts.replay(
                        histories[key], [*stored_alerts[key], *changes_for(changes, key)], rules=rules,
                        now=now, trajectories=trajectories, registry=self.registry,
                        attendance=episode.state.attendance if episode.state is not None else None)
                    replayed_here = True
                else:
                    found = episode.take(score, rules=rules, now=now, trajectories=trajectories,
                                         registry=self.registry).transitions
                changes += found
                events += _events(score, found)
            assert episode.state is not None
            saved[key] = (stored.get(key, (None, None))[0], episode.state.model_dump(mode="json"),
                          episode.state.latest_at)
        await record.save_episodes(saved)
        transition_events = [e for e in events if e.subject.split(".")[2] == "alert"]
        await record.record_transitions(changes, [e.event_id for e in transition_events])
        uow.publish(events)
        for change in changes:
            uow.after_commit(alert_transitions.labels(change.alert.tenant, change.alert.kind, change.transition).inc)


    def _parse(self, message: Inbound) -> ScoreComputed:
        """A score.computed event, checked against the registry: the alerts service trusts no event blindly."""
        try:
            envelope = CloudEvent.model_validate_json(message.body)
            score = ScoreComputed.model_validate(envelope.data)
        except ValidationError as exc:
            raise UnusableScore(f"not a score.computed event ({exc.error_count()} problems)") from None
        if envelope.type != SCORE_COMPUTED:
            raise UnusableScore("not a score.computed event (another type)")
        message.require_tenant(envelope.tenant, score.tenant)
        instrument = self.registry.get(score.score.instrument)
        if instrument is None:
            raise UnusableScore("the instrument is not in this registry")
        low, high = instrument.total_range
        problems = check_scorable(instrument, score.responses, item_level=score.score.item_level,
                                  reported_total=score.score.total)
        if score.score.kind != instrument.kind or not low <= score.score.total <= high:
            problems.append(Problem(field="score", code="not_this_instrument",
                                    message=f"the score's kind or total does not fit {instrument.id}"))
        if problems:
            raise UnusableScore(f"the score does not fit {instrument.id}: {summary(problems)}")
        return score


def changes_for(changes: Sequence[AlertTransition], key: EpisodeKey) -> list[Alert]:
    """Alerts changed earlier in this batch for the episode, latest version each."""
    latest: dict[str, Alert] = {}
    for c in changes:
        if _key_of_alert(c.alert) == key:
            latest[c.alert.alert_id] = c.alert
    return list(latest.values())


def _key_of_alert(alert: Alert) -> EpisodeKey:
    return (alert.tenant, alert.client_id, alert.episode_id)


def _events(score: ScoreComputed, changes: Sequence[AlertTransition]) -> list[Outgoing]:
    """Each transition, its notification where one is warranted, then evaluation.completed."""
    events: list[Outgoing] = []
    for change in changes:
        events.append(_transition_event(change, score.submission_id))
        if (notification := _notification_event(change, events[-1])) is not None:
            events.append(notification)
    completed = EvaluationCompleted(
        submission_id=score.submission_id, revision=score.revision, instrument=score.score.instrument,
        total=score.score.total, alert_ids=sorted({c.alert.alert_id for c in changes}),
        transitions=[c.transition for c in changes],
    )
    events.append(cloud_event(
        entity="evaluation", verb="completed", service=SERVICE, tenant=score.tenant,
        subject=subjects.outbound(score.tenant, "evaluation", "completed"), about=score.submission_id,
        data=completed, event_id=derived_event_id("evaluation.completed", score.tenant, score.submission_id,
                                                  score.revision, score.re_placed_by or ""),
    ))
    return events


class UnusableAttendance(PoisonMessage):
    """An attendance.accepted event the alerts service cannot use (malformed, another tenant's): poison."""


@dataclass
class AttendanceAlerting:
    """Accepted appointment states: placed in an episode (the one they name, else where the appointment
    was placed before, else the client's latest scored episode), kept, and the episode's attendance
    judged against the disengagement rule (rules/attendance.py); accepted endings: kept in the episode's
    state. Every accepted state or ending gets one attendance.recorded event, the last of its journey. The
    rule's thresholds are the tenant's clinical policy's where it sets them (rules/policy.py)."""

    rules: RuleSet

    def __post_init__(self) -> None:
        self.policies = PolicyRules(self.rules)

    async def __call__(self, uow: AlertsUnitOfWork, messages: Sequence[Inbound]) -> None:
        record, now = uow.record, uow.now
        accepted = [(m, self._parse(m)) for m in messages]
        changing = [a for _, a in accepted if a.disposition in ("new", "amended")]
        visits = [(a, a.attendance) for a in changing if a.attendance is not None]
        endings: dict[EpisodeKey, tuple[EpisodeEnding, int]] = {}
        for a in changing:
            if a.ending is not None:
                key = (a.ending.tenant, a.ending.client_id, a.ending.episode_id)
                if key not in endings or endings[key][1] <= a.revision:
                    endings[key] = (a.ending, a.revision)
        before = await record.placed_appointments([(v.tenant, v.appointment_id) for _, v in visits])
        unnamed = {(v.tenant, v.client_id) for _, v in visits
                   if v.episode_id is None and before.get((v.tenant, v.appointment_id), (0, None))[1] is None}
        latest = await record.latest_episodes(unnamed)
        placed: dict[AppointmentKey, str | None] = {}
        keys: set[EpisodeKey] = set(endings)
        for _, visit in visits:
            appointment = (visit.tenant, visit.appointment_id)
            was = before.get(appointment, (0, None))[1]
            episode = visit.episode_id or was or latest.get((visit.tenant, visit.client_id))
            placed[appointment] = episode
            keys |= {(visit.tenant, visit.client_id, e) for e in (episode, was) if e is not None}
        rules_of = await self.policies.for_tenants(record, (key[0] for key in keys))
        stored = await record.load_episodes(keys)  # locked (PostgreSQL) before the appointments change
        await record.remember_appointments([(v, a.revision, placed[(v.tenant, v.appointment_id)]) for a, v in visits])
        open_alerts = await record.open_alerts(keys)
        appointments = await record.episode_appointments(keys)
        changes: list[AlertTransition] = []
        events: list[Outgoing] = []
        saved: dict[EpisodeKey, tuple[int | None, dict[str, Any], datetime]] = {}
        summaries: dict[EpisodeKey, tuple[AttendanceSummary, list[AlertTransition]]] = {}
        for episode_key in sorted(keys):
            version, document = stored.get(episode_key, (None, None))
            state = EpisodeState.model_validate(document) if document is not None else None
            verdict = judge_attendance(state, appointments[episode_key], open_alerts[episode_key],
                                       episode=Episode(*episode_key), rules=rules_of[episode_key[0]],
                                       now=now, ending=endings.get(episode_key))
            saved[episode_key] = (version, verdict.state.model_dump(mode="json"), verdict.state.latest_at)
            summaries[episode_key] = (verdict.summary, verdict.transitions)
            changes += verdict.transitions
            cause = next((v.appointment_id for _, v in reversed(visits)
                          if (v.tenant, v.client_id, placed[(v.tenant, v.appointment_id)]) == episode_key),
                         "ending" if episode_key in endings else "")
            for change in verdict.transitions:
                events.append(_transition_event(change, cause))
                if (notification := _notification_event(change, events[-1])) is not None:
                    events.append(notification)
        await record.save_episodes(saved)
        transition_events = [e for e in events if e.subject.split(".")[2] == "alert"]
        await record.record_transitions(changes, [e.event_id for e in transition_events])
        for message, a in accepted:
            if a.ending is not None:
                ending_key = (a.ending.tenant, a.ending.client_id, a.ending.episode_id)
                events.append(_attendance_recorded(message, a, a.ending.episode_id, summaries.get(ending_key)))
                continue
            assert a.attendance is not None
            appointment = (a.attendance.tenant, a.attendance.appointment_id)
            episode = placed.get(appointment, before.get(appointment, (0, None))[1])
            found = summaries.get((a.attendance.tenant, a.attendance.client_id, episode)) if episode else None
            events.append(_attendance_recorded(message, a, episode, found))
        uow.publish(events)
        for change in changes:
            uow.after_commit(alert_transitions.labels(change.alert.tenant, change.alert.kind, change.transition).inc)

    def _parse(self, message: Inbound) -> AttendanceAccepted:
        try:
            envelope = CloudEvent.model_validate_json(message.body)
            accepted = AttendanceAccepted.model_validate(envelope.data)
        except ValidationError as exc:
            raise UnusableAttendance(f"not an attendance.accepted event ({exc.error_count()} problems)") from None
        if envelope.type != ATTENDANCE_ACCEPTED:
            raise UnusableAttendance("not an attendance.accepted event (another type)")
        record = accepted.attendance or accepted.ending
        assert record is not None  # the contract holds exactly one
        message.require_tenant(envelope.tenant, record.tenant)
        return accepted


def _attendance_recorded(message: Inbound, accepted: AttendanceAccepted, episode: str | None,
                         found: tuple[AttendanceSummary, list[AlertTransition]] | None) -> Outgoing:
    summary, transitions = found if found is not None else (None, [])
    clinician: str | None = None
    if accepted.ending is not None:
        ending = accepted.ending
        tenant, client, about = ending.tenant, ending.client_id, ending_id(ending.client_id, ending.episode_id)
        status: AttendanceStatus | Literal["ending"] = "ending"
    else:
        assert accepted.attendance is not None
        visit = accepted.attendance
        tenant, client, about, status = visit.tenant, visit.client_id, visit.appointment_id, visit.status
        clinician = visit.clinician_id
    data = AttendanceRecorded(
        tenant=tenant, appointment_id=about, revision=accepted.revision, client_id=client, episode_id=episode,
        clinician_id=clinician, status=status, summary=summary,
        alert_ids=sorted({t.alert.alert_id for t in transitions}),
        transitions=[t.transition for t in transitions],
    )
    return cloud_event(
        entity="attendance", verb="recorded", service=SERVICE, tenant=tenant,
        subject=subjects.outbound(tenant, "attendance", "recorded"), about=about,
        data=data, event_id=message.event_id("attendance.recorded"),
    )


@dataclass
class AlertCommands:
    """acknowledge / resolve from clinicians, on rapport.<tenant>.in.alert-commands."""

    async def __call__(self, uow: AlertsUnitOfWork, messages: Sequence[Inbound]) -> None:
        record, now = uow.record, uow.now
        events: list[Outgoing] = []
        for message in messages:
            try:
                command = AlertCommand.model_validate_json(message.body)
            except ValidationError as exc:
                events.append(_command_rejected(message, None, f"not an alert command ({exc.error_count()} problems)"))
                continue
            alert = await record.get_alert(message.tenant, command.alert_id)
            if alert is None:
                events.append(_command_rejected(message, command, "no such alert for this tenant"))
                continue
            outcome = apply_command(alert, command, now)
            if isinstance(outcome, CommandRejected):
                events.append(_command_rejected(message, command, outcome.reason))
                continue
            event = _transition_event(outcome, command.command_id)
            await record.record_transitions([outcome], [event.event_id])
            uow.after_commit(alert_transitions.labels(alert.tenant, alert.kind, outcome.transition).inc)
            events.append(event)
        uow.publish(events)


def _notification_event(change: AlertTransition, transition_event: Outgoing) -> Outgoing | None:
    notification = notification_for(change)
    if notification is None or not change.alert.clinician_id:
        return None
    return cloud_event(
        entity="notify", verb="sent", service=SERVICE, tenant=change.alert.tenant,
        subject=subjects.notify(change.alert.tenant, change.alert.clinician_id), about=change.alert.alert_id,
        data=notification, event_id=derived_event_id("notify", change.alert.tenant, transition_event.event_id),
    )


def _transition_event(change: AlertTransition, cause: str) -> Outgoing:
    verb = {"raised": "raised", "resolved": "resolved"}.get(change.transition, "updated")
    return cloud_event(
        entity="alert", verb=verb, service=SERVICE, tenant=change.alert.tenant,
        subject=subjects.outbound(change.alert.tenant, "alert", verb), about=cause, data=with_words(change),
        event_id=derived_event_id("alert.transition", change.alert.tenant, change.alert.alert_id,
                                  change.alert.version, change.transition),
    )


def _command_rejected(message: Inbound, command: AlertCommand | None, reason: str) -> Outgoing:
    data = AlertCommandRejected(command_id=command.command_id if command else None,
                                alert_id=command.alert_id if command else None, reason=reason)
    return cloud_event(
        entity="alert-command", verb="rejected", service=SERVICE, tenant=message.tenant,
        subject=subjects.outbound(message.tenant, "alert-command", "rejected"),
        about=command.command_id if command else None, data=data, event_id=message.event_id("alert-command.answer"),
    )
