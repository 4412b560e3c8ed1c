"""The episode state: compact, constant in size, serialisable, and the same however it was reached."""

from __future__ import annotations

import json
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rapport.services.alerts.rules import AlertKey, EpisodeAlerts, EpisodeState, evaluate, load_ruleset, replay
from rapport.services.alerts.rules.state import SCHEMA_VERSION, Running
from rapport.shared.contracts.alert import Alert
from rapport.shared.contracts.score import ScoreComputed, Scored

RULES = load_ruleset()
T0 = datetime(2026, 2, 2, 9, tzinfo=UTC)
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def srs(total: float, session: int) -> ScoreComputed:
    items = (total / 4,) * 4
    scored = Scored(instrument="srs", instrument_version="3", kind="alliance", better="higher", total=total,
                    total_min=0, total_max=40, risk_checked=True)
    return ScoreComputed(
        tenant="clinic-a", submission_id=f"srs-{session}", revision=1, client_id="client-001", episode_id="ep-001",
        clinician_id="clin-07", administered_at=T0 + timedelta(days=session), session_number=session, score=scored,
        responses=dict(enumerate(items, start=1)), parameters={"concern_cutoff": 36},
    )


def steady(session: int) -> float:
    """A client whose alliance wobbles between 38 and 38.5: no rupture, ever."""
    return 38.0 + 0.5 * (session % 2)


def fold(scores: list[ScoreComputed]) -> tuple[EpisodeState | None, dict[AlertKey, Alert]]:
    episode = EpisodeAlerts(None)
    for score in scores:
        episode.take(score, rules=RULES, now=NOW)
    return episode.state, episode.open


def shape(document: Any, path: str = "") -> set[str]:
    """The paths of a JSON document: what it holds, whatever the numbers."""
    if isinstance(document, dict):
        return {p for k, v in document.items() for p in shape(v, f"{path}/{k}")} | {path}
    return {path}


def zeroed(document: Any) -> Any:
    """Every number written as 0: '5' and '500' sessions differ only in digits."""
    if isinstance(document, dict):
        return {k: zeroed(v) for k, v in document.items()}
    if isinstance(document, list):
        return [zeroed(v) for v in document]
    return 0 if isinstance(document, int | float) and not isinstance(document, bool) else document


@given(st.lists(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False), min_size=1, max_size=200))
def test_welford_running_stats_equal_the_textbook_mean_and_sd(values: list[float]) -> None:
    running = Running()
    for v in values:
        running = running.add(v)
    assert running.n == len(values)
    assert running.mean == pytest.approx(statistics.fmean(values), abs=1e-9)
    if len(values) >= 2:
        assert running.sd == pytest.approx(statistics.stdev(values), rel=1e-6, abs=1e-6)
    else:
        assert running.sd is None


def test_evaluating_with_500_earlier_sessions_gives_the_same_result_as_folding_and_the_state_does_not_grow() -> None:
    short = [srs(steady(s), s) for s in range(1, 6)]
    long = [srs(steady(s), s) for s in range(1, 501)]
    short_state, _ = fold(short)
    long_state, long_open = fold(long)
    assert long_open == {} and short_state is not None and long_state is not None
    assert replay(long, rules=RULES, now=NOW).alerts == {}
    short_doc, long_doc = short_state.model_dump(mode="json"), long_state.model_dump(mode="json")
    # the same fields, and byte for byte the same size once numbers are written at one width
    assert shape(short_doc) == shape(long_doc)
    assert len(json.dumps(zeroed(long_doc))) == len(json.dumps(zeroed(short_doc)))
    assert len(json.dumps(long_doc)) < 1_000

    # session 501 drops: evaluated from the compact state, its z is the one over the whole history
    drop = srs(33, 501)
    evaluation = evaluate(long_state, drop, long_open, rules=RULES, now=NOW)
    history = [s.score.total for s in long]
    values = evaluation.transitions[0].alert.evidence[-1].values
    assert values["own_mean"] == round(statistics.fmean(history), 2) and values["own_sessions"] == 500
    expected_z = (33 - statistics.fmean(history)) / max(statistics.stdev(history), 1.0)
    assert values["z"] == round(expected_z, 2)
    # and the same as replaying all 501 from scratch
    replayed = replay([*long, drop], rules=RULES, now=NOW)
    assert replayed.state == evaluation.state
    assert [a.model_dump() for a in replayed.alerts.values()] == [t.alert.model_dump() for t in evaluation.transitions]


def test_the_state_survives_json_and_carries_its_schema_version() -> None:
    state, _ = fold([srs(38, 1), srs(31, 2), srs(32, 3)])
    assert state is not None and state.schema_version == SCHEMA_VERSION
    document = json.loads(json.dumps(state.model_dump(mode="json")))
    assert EpisodeState.model_validate(document) == state
    assert set(document) == {"schema_version", "latest_at", "sessions", "last_session_day", "series", "ruptures",
                             "sudden_losses", "attendance"}
    assert document["attendance"] is None  # no appointments seen
    assert document["ruptures"]["srs"]["sessions_since"] == 1
    assert set(document["series"]) == {"srs", "srs:bond", "srs:goal", "srs:task"}


def test_a_schema_1_document_is_upgraded() -> None:
    old = {"schema_version": 1, "latest_at": "2026-02-03T09:00:00Z",
           "series": {"srs": {"count": 2, "previous": 31.0, "earlier": {"n": 2, "mean": 34.5, "m2": 24.5}}},
           "ruptures": {"srs": {"level_to_regain": 37.0, "sessions_since": 0, "escalated": False}}}
    state = EpisodeState.model_validate(old)
    assert state.schema_version == SCHEMA_VERSION and state.sessions == 2
    assert state.series["srs"].running.mean == 34.5 and state.ruptures["srs"].level_to_regain == 37.0


@settings(max_examples=25, deadline=None)
@given(st.permutations(list(range(1, 9))))
def test_replay_gives_the_same_state_whatever_order_the_scores_arrived_in(order: list[int]) -> None:
    totals = [38, 37, 31, 33, 36, 30, 38, 39]
    scores = {s: srs(totals[s - 1], s) for s in range(1, 9)}
    in_order, _ = fold([scores[s] for s in range(1, 9)])
    assert replay([scores[s] for s in order], rules=RULES, now=NOW).state == in_order


def test_replay_counts_only_the_latest_revision_of_a_submission() -> None:
    first = srs(31, 2)
    amended = srs(38, 2).model_copy(update={"revision": 2, "supersedes_revision": 1})
    replayed = replay([srs(38, 1), amended, first], rules=RULES, now=NOW)
    assert replayed.alerts == {} and replayed.state is not None
    assert replayed.state.series["srs"].previous == 38
