"""The expected-trajectory not_on_track rule and its fit (pure: no broker, no database)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_alert_rules import NOW, RULES, Episode, phq9, phq9_series

from rapport.services.alerts.rules import AlertKey, evaluate
from rapport.services.alerts.rules.trajectory import IntakeBand, TrajectoryFit, fit
from rapport.services.alerts.trajectories import intake_bands
from rapport.shared.contracts.alert import Alert
from rapport.shared.instruments import load_registry

FITTED = datetime(2026, 11, 30, tzinfo=UTC)
PHQ9_BANDS = intake_bands(load_registry().get("phq9"))  # type: ignore[arg-type]


def phq9_fit(series: list[list[tuple[int, float]]], min_episodes: int = 20) -> TrajectoryFit:
    return fit(series, tenant="clinic-a", instrument="phq9", better="lower", bands=PHQ9_BANDS, percentile=0.9,
               min_episodes=min_episodes, max_session=20, fitted_at=FITTED)


def moderate_intakes(n: int = 30) -> list[list[tuple[int, float]]]:
    """n synthetic episodes with a moderate intake (12) whose session-k scores are 12 - k + (0..9)/3."""
    return [[(1, 12.0), *((k, 12.0 - k + (i % 10) / 3) for k in range(2, 8))] for i in range(n)]


def test_intake_bands_are_the_registry_severity_bands_or_the_clinical_range() -> None:
    registry = load_registry()
    assert [b.label for b in PHQ9_BANDS] == ["minimal", "mild", "moderate", "moderately severe", "severe"]
    ors = registry.get("ors")
    assert ors is not None and ors.bands is None and ors.caseness is not None
    assert [(b.label, b.min) for b in intake_bands(ors)] == [("clinical", 0), ("non-clinical", ors.caseness.value)]


def test_a_cell_is_the_mean_and_the_worse_side_percentile_of_that_sessions_scores() -> None:
    fitted = phq9_fit(moderate_intakes())
    cell = fitted.cell(12, 3)
    assert cell is not None and (cell.band, cell.episodes) == ("moderate", 30)
    values = sorted(9 + (i % 10) / 3 for i in range(30))
    assert cell.expected == pytest.approx(sum(values) / 30, abs=0.01)
    position = 0.9 * 29  # linear interpolation between order statistics
    assert cell.boundary == pytest.approx(values[26] + (values[27] - values[26]) * (position - 26), abs=0.01)
    assert fitted.cell(3, 3) is None  # no minimal-intake episodes
    assert fitted.cell(12, 9) is None  # nobody was seen at session 9
    assert fitted.episodes == 30


def test_cells_with_too_few_episodes_are_left_out() -> None:
    fitted = phq9_fit(moderate_intakes(19))
    assert fitted.cells == [] and fitted.episodes == 19


def test_for_a_higher_is_better_measure_the_boundary_is_the_low_percentile() -> None:
    series = [[(1, 15.0), (2, float(10 + i % 20))] for i in range(40)]
    fitted = fit(series, tenant="clinic-a", instrument="ors", better="higher",
                 bands=[IntakeBand(label="clinical", min=0), IntakeBand(label="non-clinical", min=25)],
                 percentile=0.9, min_episodes=20, max_session=20, fitted_at=FITTED)
    cell = fitted.cell(15, 2)
    assert cell is not None and cell.boundary < cell.expected
    assert fitted.worse(cell.boundary - 1, cell.boundary) and not fitted.worse(cell.boundary + 1, cell.boundary)


def test_a_score_on_the_boundary_is_within_it_on_both_kinds_of_measure() -> None:
    lower = phq9_fit(moderate_intakes())
    assert not lower.worse(11.7, 11.7) and lower.worse(11.71, 11.7)
    higher = lower.model_copy(update={"better": "higher"})
    assert not higher.worse(25.0, 25.0) and higher.worse(24.99, 25.0)


def test_a_cell_needs_at_least_min_episodes_and_sessions_2_to_max_session() -> None:
    assert phq9_fit(moderate_intakes(20)).cell(12, 3) is not None  # exactly 20 episodes: kept
    assert phq9_fit(moderate_intakes(19)).cell(12, 3) is None
    long = [[(1, 12.0), (20, 8.0), (21, 8.0)] for _ in range(20)]
    fitted = phq9_fit(long)
    assert fitted.cell(12, 20) is not None and fitted.cell(12, 21) is None


def test_an_intake_on_a_band_edge_belongs_to_the_band_it_starts() -> None:
    fitted = phq9_fit(moderate_intakes())
    band = fitted.band_of(10)
    assert band is not None and band.label == "moderate"
    below = fitted.band_of(9.99)
    assert below is not None and below.label == "mild"


def test_a_client_slower_than_90_percent_of_the_clinics_moderate_intakes_is_not_on_track_then_back() -> None:
    """Intake PHQ-9 12; at session 3 most clients with that intake are near 10, this one is at 13: the
    expected-trajectory rule fires well before the session-6 checkpoint. At session 4 the client is at
    8, inside the range, and the alert resolves as back on track."""
    trajectories = {"phq9": phq9_fit(moderate_intakes())}
    state = None
    for score in phq9_series([12, 12]):  # session 2: 12 is within the range (boundary about 13)
        result = evaluate(state, score, {}, rules=RULES, now=NOW, trajectories=trajectories)
        assert not result.transitions
        state = result.state
    off = evaluate(state, phq9(13, 3, baseline=12, previous=12), {}, rules=RULES, now=NOW,
                   trajectories=trajectories)
    [raised] = off.transitions
    assert (raised.transition, raised.alert.kind, raised.alert.severity) == ("raised", "not_on_track", "high")
    found = raised.alert.evidence[-1]
    assert found.rule_id == "expected_trajectory"
    assert found.values["intake_band"] == "moderate" and found.values["status"] == "off trajectory"
    assert found.summary.startswith("Off the expected trajectory on PHQ-9 at session 3: 13")
    told = off.notifications[0].evidence
    assert "expected" in told and f"Rule expected_trajectory v{RULES.expected_trajectory.version}" in told

    opened = {AlertKey.of(raised.alert): raised.alert}
    back = evaluate(off.state, phq9(8, 4, baseline=12, previous=13), opened, rules=RULES, now=NOW,
                    trajectories=trajectories)
    [resolved] = back.transitions
    assert (resolved.transition, resolved.alert.resolution) == ("resolved", "back_on_track")
    assert not back.notifications


def test_without_a_fit_only_the_checkpoint_rule_runs() -> None:
    episode = Episode()
    for score in phq9_series([12, 12, 13]):
        episode.give(score)
    assert not any(t.alert.kind == "not_on_track" for t in episode.log)


def test_the_checkpoint_finding_stands_when_the_trajectory_says_within_range() -> None:
    """At session 6 a client still at 11 is within a lenient fitted range, but has not reliably improved:
    the checkpoint rule's finding is not cleared by the trajectory rule."""
    lenient = [[(1, 12.0), *((k, 12.0 + (i % 10) / 3) for k in range(2, 8))] for i in range(30)]
    trajectories = {"phq9": phq9_fit(lenient)}
    state = None
    opened: dict[AlertKey, Alert] = {}
    for score in phq9_series([12, 12, 12, 11, 11, 11]):
        result = evaluate(state, score, opened, rules=RULES, now=NOW, trajectories=trajectories)
        state = result.state
        for t in result.transitions:
            opened[AlertKey.of(t.alert)] = t.alert
    [alert] = opened.values()
    assert alert.kind == "not_on_track" and alert.status == "open"
    assert [e.rule_id for e in alert.evidence] == ["not_on_track"]


@given(st.lists(st.lists(st.integers(min_value=0, max_value=27), min_size=1, max_size=8), min_size=0, max_size=60),
       st.integers(min_value=1, max_value=10), st.randoms())
def test_a_fit_does_not_depend_on_episode_order_and_its_cells_hold_their_scores(
    totals: list[list[int]], min_episodes: int, rng: random.Random
) -> None:
    series = [[(session, float(t)) for session, t in enumerate(episode, start=1)] for episode in totals]
    fitted = phq9_fit(series, min_episodes=min_episodes)
    shuffled = list(series)
    rng.shuffle(shuffled)
    assert phq9_fit(shuffled, min_episodes=min_episodes) == fitted
    assert fitted.episodes == sum(1 for episode in series if len(episode) >= 2)
    for cell in fitted.cells:
        band = next(b for b in reversed(PHQ9_BANDS) if b.label == cell.band)
        upper = next((b.min for b in PHQ9_BANDS if b.min > band.min), 28)
        scores = [ep[cell.session - 1][1] for ep in series
                  if len(ep) >= cell.session and band.min <= ep[0][1] < upper]
        assert cell.episodes == len(scores) >= min_episodes
        assert min(scores) <= cell.boundary <= max(scores) and min(scores) <= cell.expected <= max(scores)
