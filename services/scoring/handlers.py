"""Accepted submissions: score exactly, place in the episode's series, store, publish score.computed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from rapport.services.scoring.domain import change, nhs_talking_therapies, score
from rapport.services.scoring.episodes import place
from rapport.services.scoring.fhir import derived_observation
from rapport.services.scoring.repository import SeriesKey
from rapport.services.scoring.series import Arrival, Placement, Point, Replaced, Summary, needing_points, place_batch
from rapport.services.scoring.unit_of_work import Record, ScoringUnitOfWork
from rapport.shared.contracts.envelope import CloudEvent, derived_event_id, event_type
from rapport.shared.contracts.score import ScoreComputed, Scored
from rapport.shared.contracts.submission import SubmissionAccepted
from rapport.shared.db.delivery import Outgoing
from rapport.shared.instruments import Instrument, Registry
from rapport.shared.instruments.validation import check_scorable, summary
from rapport.shared.messaging import subjects
from rapport.shared.messaging.consumer import Inbound
from rapport.shared.messaging.publish import cloud_event
from rapport.shared.messaging.retry import PoisonMessage
from rapport.shared.metrics import scores

SERVICE = "scoring"
ACCEPTED = event_type("submission", "accepted")


class UnscorableSubmission(PoisonMessage):
    """An accepted event scoring cannot use (malformed, another tenant's, not fitting its instrument): poison."""


@dataclass
class Scoring:
    registry: Registry
    episode_gap: timedelta = timedelta(days=90)

    async def __call__(self, uow: ScoringUnitOfWork, messages: Sequence[Inbound]) -> None:
        record = uow.record
        accepted = [a for a in map(self._parse, messages) if a.disposition != "unchanged"]
        episodes = await self._episodes(record, accepted)
        keys = [_series_key(a, episodes) for a in accepted]
        partners = [(*k[:3], PAIRED[k[3]]) for k in keys if k[3] in PAIRED]
        summaries = await record.load_summaries([*keys, *partners])
        known = set(summaries)
        scored = [self._score(event) for event in accepted]
        arrivals = [Arrival(key, Point(e.submission.submission_id, s.total, e.submission.administered_at),
                            e.disposition == "new") for e, key, (_, s) in zip(accepted, keys, scored, strict=True)]
        points = await record.load_points(needing_points(summaries, arrivals))
        placements = place_batch(summaries, points, arrivals)
        computed: list[ScoreComputed] = []
        later: list[tuple[str, Replaced, str]] = []  # scores whose placement a late one changed, and why
        for event, arrival, (instrument, scored_), placement in zip(accepted, arrivals, scored, placements,
                                                                   strict=True):
            summaries[arrival.key] = placement.summary
            computed.append(_computed(event, arrival.key[2], instrument, scored_, placement,
                                      _course(arrival.key, summaries)))
            cause = f"{event.submission.submission_id}:{event.revision}"
            later += [(event.submission.tenant, replaced, cause) for replaced in placement.later]
        for c in computed:
            uow.after_commit(scores.labels(c.tenant, c.score.instrument, c.score.band or "none").inc)
        computed += await self._re_placed(record, computed, later)
        changed = set(keys)
        await record.save(computed, {k: v for k, v in summaries.items() if k in changed}, known)
        uow.publish(_event(c) for c in computed)

    async def _re_placed(self, record: Record, computed: list[ScoreComputed],
                         later: Sequence[tuple[str, Replaced, str]]) -> list[ScoreComputed]:
        """Give the scores after a late or corrected one their new baseline or previous score. One of
        this batch is corrected before it is sent; a stored one is re-sent, marked `re_placed_by`."""
        in_batch = {(c.tenant, c.submission_id): n for n, c in enumerate(computed)}
        stored = await record.stored_scores([(tenant, r.point.submission_id) for tenant, r, _ in later
                                                          if (tenant, r.point.submission_id) not in in_batch])
        re_sent: dict[tuple[str, str], ScoreComputed] = {}
        for tenant, replaced, cause in later:
            key = (tenant, replaced.point.submission_id)
            if key in in_batch:
                computed[in_batch[key]] = self._moved(computed[in_batch[key]], replaced)
            elif (earlier := re_sent.get(key, stored.get(key))) is not None:
                re_sent[key] = self._moved(earlier, replaced).model_copy(update={"re_placed_by": cause})
        return list(re_sent.values())

    def _moved(self, score_: ScoreComputed, replaced: Replaced) -> ScoreComputed:
        movement = change(self._instrument(score_.score.instrument), baseline_total=replaced.baseline.total,
                          baseline_at=replaced.baseline.at, previous_total=replaced.previous.total,
                          current_total=score_.score.total)
        return score_.model_copy(update={"change": movement})

    async def _episodes(self, record: Record,
                        accepted: Sequence[SubmissionAccepted]) -> dict[tuple[str, str], str]:
        """Episode ids, by submission id, for submissions that named none (episodes.py): an amendment
        keeps the episode it was placed in, anything else goes by the gap rule."""
        unnamed = [a.submission for a in accepted if a.submission.episode_id is None]
        if not unnamed:
            return {}
        corrections = [(a.submission.tenant, a.submission.submission_id) for a in accepted
                       if a.submission.episode_id is None and a.disposition == "amended"]
        episodes = await record.placed_episodes(corrections)
        spans = await record.load_spans([(s.tenant, s.client_id) for s in unnamed
                                                      if (s.tenant, s.submission_id) not in episodes])
        after = {client: list(client_spans) for client, client_spans in spans.items()}
        for s in unnamed:
            if (s.tenant, s.submission_id) not in episodes:
                client = (s.tenant, s.client_id)
                span, after[client] = place(after[client], s.administered_at, self.episode_gap)
                episodes[(s.tenant, s.submission_id)] = span.episode_id
        await record.save_spans(spans, after)
        return episodes

    def _parse(self, message: Inbound) -> SubmissionAccepted:
        """A submission.accepted event, checked as ingest checked it: scoring trusts no event blindly."""
        try:
            envelope = CloudEvent.model_validate_json(message.body)
            accepted = SubmissionAccepted.model_validate(envelope.data)
        except ValidationError as exc:
            raise UnscorableSubmission(f"not a submission.accepted event ({exc.error_count()} problems)") from None
        if envelope.type != ACCEPTED:
            raise UnscorableSubmission("not a submission.accepted event (another type)")
        message.require_tenant(envelope.tenant, accepted.submission.tenant)
        s = accepted.submission
        instrument = self._instrument(s.instrument)
        if problems := check_scorable(instrument, s.responses, item_level=s.item_level,
                                      reported_total=s.reported_total):
            raise UnscorableSubmission(f"the submission does not fit {instrument.id}: {summary(problems)}")
        return accepted

    def _score(self, event: SubmissionAccepted) -> tuple[Instrument, Scored]:
        instrument, s = self._instrument(event.submission.instrument), event.submission
        return instrument, score(instrument, s.responses, reported_total=s.reported_total, item_level=s.item_level)

    def _instrument(self, instrument_id: str) -> Instrument:
        instrument = self.registry.get(instrument_id)
        if instrument is None:
            raise UnscorableSubmission("the instrument is not in this registry")
        return instrument


# NHS Talking Therapies judge a course on PHQ-9 and GAD-7 together (clinical-anchors §3.2).
PAIRED = {"phq9": "gad7", "gad7": "phq9"}


def _course(key: SeriesKey, summaries: dict[SeriesKey, Summary]) -> dict[str, Any] | None:
    """NHS Talking Therapies outcomes of the episode so far: first against latest of both measures."""
    if key[3] not in PAIRED:
        return None
    mine, other = summaries.get(key), summaries.get((*key[:3], PAIRED[key[3]]))
    if mine is None or other is None:
        return None
    phq9, gad7 = (mine, other) if key[3] == "phq9" else (other, mine)
    outcome = nhs_talking_therapies(phq9.baseline.total, phq9.latest.total, gad7.baseline.total, gad7.latest.total)
    return asdict(outcome)


def _series_key(event: SubmissionAccepted, episodes: dict[tuple[str, str], str]) -> SeriesKey:
    s = event.submission
    return (s.tenant, s.client_id, s.episode_id or episodes[(s.tenant, s.submission_id)], s.instrument)


def _computed(
    event: SubmissionAccepted, episode: str, instrument: Instrument, scored: Scored, placement: Placement,
    course: dict[str, Any] | None,
) -> ScoreComputed:
    s = event.submission
    baseline, previous = placement.baseline, placement.previous
    movement = None
    if baseline is not None:
        movement = change(
            instrument, baseline_total=baseline.total, baseline_at=baseline.at,
            previous_total=previous.total if previous else None, current_total=scored.total,
        )
    parameters: dict[str, str | float | None] = {}
    if instrument.caseness:
        parameters["caseness_cutoff"] = instrument.caseness.value
    if instrument.reliable_change:
        parameters["reliable_change"] = round(instrument.reliable_change.points(), 2)
        parameters["reliable_change_source"] = ",".join(instrument.reliable_change.source)
    if instrument.concern_cutoff:
        parameters["concern_cutoff"] = instrument.concern_cutoff.value
    return ScoreComputed(
        tenant=s.tenant, submission_id=s.submission_id, revision=event.revision, client_id=s.client_id,
        episode_id=episode, episode_by="source" if s.episode_id else "gap_rule", clinician_id=s.clinician_id,
        administered_at=s.administered_at,
        session_number=s.session_number, score=scored, change=movement, responses=s.responses,
        supersedes_revision=event.revision - 1 if event.disposition == "amended" else None,
        parameters=parameters, fhir_observation=derived_observation(s, instrument, scored),
        talking_therapies=course,
    )


def _event(computed: ScoreComputed) -> Outgoing:
    return cloud_event(
        entity="score", verb="computed", service=SERVICE, tenant=computed.tenant,
        subject=subjects.outbound(computed.tenant, "score", "computed"),
        about=computed.submission_id, data=computed,
        event_id=derived_event_id("score.computed", computed.tenant, computed.submission_id, computed.revision,
                                  computed.re_placed_by or ""),
    )
