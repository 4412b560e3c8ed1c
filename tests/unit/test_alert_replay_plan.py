"""Which episodes of a batch the alerts service replays from their first score, decided before any
read (services/alerts/rules/episode.py): late, amended and re-placed scores, and only those."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rapport.services.alerts.rules import EpisodeState, evaluate, load_ruleset
from rapport.services.alerts.rules.episode import needs_replay
from rapport.shared.contracts.score import ScoreComputed, Scored

RULES = load_ruleset()
T0 = datetime(2026, 2, 2, 9, tzinfo=UTC)


def srs(session: int, **changes: object) -> ScoreComputed:
    scored = Scored(instrument="srs", instrument_version="3", kind="alliance", better="higher", total=38.0,
                    total_min=0, total_max=40, risk_checked=True)
    score = ScoreComputed(
        tenant="clinic-a", submission_id=f"srs-{session}", revision=1, client_id="client-001", episode_id="ep-001",
        clinician_id="clin-07", administered_at=T0 + timedelta(days=7 * session), session_number=session,
        score=scored, responses={1: 9.5, 2: 9.5, 3: 9.5, 4: 9.5}, parameters={"concern_cutoff": 36},
    )
    return score.model_copy(update=changes)


def state_after(*sessions: int) -> EpisodeState:
    state = None
    for n in sessions:
        state = evaluate(state, srs(n), {}, rules=RULES, now=T0 + timedelta(days=100)).state
    assert state is not None
    return state


def test_scores_in_administration_order_are_taken_in_turn_new_episode_or_stored() -> None:
    assert not needs_replay(None, [srs(1), srs(2), srs(3)])
    assert not needs_replay(state_after(1, 2), [srs(3), srs(4)])


def test_a_score_older_than_what_the_episode_has_seen_replays_it() -> None:
    assert needs_replay(state_after(1, 3), [srs(2)])
    assert needs_replay(None, [srs(3), srs(2)]), "late against an earlier score of the same batch"


def test_an_amended_or_re_placed_score_replays_its_episode_even_when_it_is_the_latest() -> None:
    assert needs_replay(state_after(1, 2), [srs(2, revision=2, supersedes_revision=1)])
    assert needs_replay(state_after(1, 2), [srs(3, re_placed_by="srs-0:1")])


def test_a_score_at_the_same_time_as_the_latest_is_not_late() -> None:
    assert not needs_replay(state_after(1, 2), [srs(2, submission_id="srs-2b")])
