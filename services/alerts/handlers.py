"""Computed scores and clinicians' commands: evaluate the episode, keep the alert lifecycle, notify."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from rapport.services.alerts.repository import EpisodeKey
from rapport.services.alerts.rules import (
    CommandRejected,
    EpisodeAlerts,
    EpisodeState,
    RuleSet,
    apply_command,
    notification_for,
    with_words,
)
from rapport.services.alerts.trajectories import TrajectoryFits
from rapport.services.alerts.unit_of_work import AlertsUnitOfWork
from rapport.shared.contracts.alert import (
    Alert,
    AlertCommand,
    AlertCommandRejected,
    AlertTransition,
    EvaluationCompleted,
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


class UnusableScore(PoisonMessage):
    """A score.computed event the alerts service cannot use (malformed, another tenant's, not fitting
    its instrument): poison."""


def _key(score: ScoreComputed) -> EpisodeKey:
    return (score.tenant, score.client_id, score.episode_id)


@dataclass
class Alerting:
    rules: RuleSet
    registry: Registry
    trajectories: TrajectoryFits = field(default_factory=TrajectoryFits)

    async def __call__(self, uow: AlertsUnitOfWork, messages: Sequence[Inbound]) -> None:
        record, now = uow.record, uow.now
        scores = [self._parse(m) for m in messages]
        by_episode: dict[EpisodeKey, list[ScoreComputed]] = defaultdict(list)
        for score in scores:
            by_episode[_key(score)].append(score)
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
            episode, trajectories = episodes[key], fits[key[0]]
            replayed_here = False
            for score in episode_scores:
                if replayed_here:
                    # the replay read every stored score of the episode, this batch's included
                    found: list[AlertTransition] = []
                elif episode.needs_replay([score]):
                    # late, amended or re-placed: evaluate the whole episode again in administration order
                    episode, found = EpisodeAlerts.replay(
                        histories[key], [*stored_alerts[key], *changes_for(changes, key)], rules=self.rules,
                        now=now, trajectories=trajectories, registry=self.registry)
                    replayed_here = True
                else:
                    found = episode.take(score, rules=self.rules, now=now, trajectories=trajectories,
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
