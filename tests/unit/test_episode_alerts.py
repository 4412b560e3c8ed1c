"""The EpisodeAlerts aggregate (issue 10): which episodes of a batch are replayed from their first
score, decided before any read (late, amended and re-placed scores, and only those), and a replay
that keeps what clinicians did."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rapport.services.alerts.rules import AlertKey, EpisodeAlerts, EpisodeState, apply_command, evaluate, load_ruleset
from rapport.shared.contracts.alert import AlertCommand, AlertTransition
from rapport.shared.contracts.score import ScoreComputed, Scored

RULES = load_ruleset()
T0 = datetime(2026, 2, 2, 9, tzinfo=UTC)


def srs(session: int, total: float = 38.0, **changes: object) -> ScoreComputed:
    scored = Scored(instrument="srs", instrument_version="3", kind="alliance", better="higher", total=total,
                    total_min=0, total_max=40, risk_checked=True)
    score = ScoreComputed(
        tenant="clinic-a", submission_id=f"srs-{session}", revision=1, client_id="client-001", episode_id="ep-001",
        clinician_id="clin-07", administered_at=T0 + timedelta(days=7 * session), session_number=session,
        score=scored, responses=dict.fromkeys(range(1, 5), total / 4), parameters={"concern_cutoff": 36},
    )
    return score.model_copy(update=changes)


def state_after(*sessions: int) -> EpisodeState:
    state = None
    for n in sessions:
        state = evaluate(state, srs(n), {}, rules=RULES, now=T0 + timedelta(days=100)).state
    assert state is not None
    return state


def test_scores_in_administration_order_are_taken_in_turn_new_episode_or_stored() -> None:
    assert not EpisodeAlerts(None).needs_replay([srs(1), srs(2), srs(3)])
    assert not EpisodeAlerts(state_after(1, 2)).needs_replay([srs(3), srs(4)])


def test_a_score_older_than_what_the_episode_has_seen_replays_it() -> None:
    assert EpisodeAlerts(state_after(1, 3)).needs_replay([srs(2)])
    assert EpisodeAlerts(None).needs_replay([srs(3), srs(2)]), "late against an earlier score of the same batch"


def test_an_amended_or_re_placed_score_replays_its_episode_even_when_it_is_the_latest() -> None:
    assert EpisodeAlerts(state_after(1, 2)).needs_replay([srs(2, revision=2, supersedes_revision=1)])
    assert EpisodeAlerts(state_after(1, 2)).needs_replay([srs(3, re_placed_by="srs-0:1")])


def test_a_score_at_the_same_time_as_the_latest_is_not_late() -> None:
    assert not EpisodeAlerts(state_after(1, 2)).needs_replay([srs(2, submission_id="srs-2b")])


def test_a_late_score_replays_the_episode_and_keeps_the_therapists_acknowledgement() -> None:
    """Dana's alliance fell from 38 to 31 at session 2; her therapist acknowledged the rupture. Then
    the SRS of a session between them (37) is typed in late: the rupture is still there, with the
    same id, still acknowledged, and the episode now counts three sessions."""
    now = T0 + timedelta(days=100)
    episode = EpisodeAlerts(None)
    raised: list[AlertTransition] = []
    for score in (srs(2, 38.0), srs(4, 31.0)):
        raised += episode.take(score, rules=RULES, now=now).transitions
    [rupture] = [t.alert for t in raised if t.alert.kind == "alliance_rupture"]
    command = AlertCommand.model_validate({"command_id": "cmd-1", "alert_id": rupture.alert_id,
                                           "action": "acknowledge", "by": "clin-07"})
    acknowledged = apply_command(rupture, command, now)
    assert isinstance(acknowledged, AlertTransition) and acknowledged.alert.status == "acknowledged"
    late = srs(3, 37.0)
    assert episode.needs_replay([late])
    replayed, found = EpisodeAlerts.replay([srs(2, 38.0), late, srs(4, 31.0)], [acknowledged.alert], rules=RULES,
                                           now=now)
    kept = replayed.open[AlertKey("alliance_rupture", "srs", None)]
    assert (kept.alert_id, kept.status) == (rupture.alert_id, "acknowledged")
    assert all(t.transition != "raised" for t in found), "nothing raised a second time"
    assert replayed.state is not None and replayed.state.sessions == 3
