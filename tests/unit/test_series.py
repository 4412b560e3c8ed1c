"""Where a score sits in its episode: baseline and previous, in administration order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rapport.services.scoring.series import (
    Arrival,
    Point,
    Summary,
    append,
    follows,
    insert,
    needing_points,
    place_batch,
)

T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)


def _point(n: int, total: float, day: int) -> Point:
    return Point(f"sub-{n}", total, T0 + timedelta(days=day))


def test_the_first_score_of_an_episode_is_its_baseline_and_has_no_change() -> None:
    placement = append(None, _point(1, 18, 0))
    assert placement.baseline is None and placement.previous is None
    assert placement.summary.baseline.total == 18 and placement.summary.count == 1


def test_a_later_score_is_compared_with_the_baseline_and_the_previous_one() -> None:
    summary = append(append(None, _point(1, 18, 0)).summary, _point(2, 15, 7)).summary
    placement = append(summary, _point(3, 11, 14))
    assert placement.baseline is not None and placement.baseline.total == 18
    assert placement.previous is not None and placement.previous.total == 15
    assert placement.summary.count == 3 and placement.summary.latest.total == 11


def test_a_late_score_is_placed_by_administration_time_not_arrival() -> None:
    points = [_point(1, 18, 0), _point(3, 11, 14)]
    late = _point(2, 15, 7)
    assert not follows(append(append(None, points[0]).summary, points[1]).summary, late)
    placement = insert(points, late)
    assert placement.baseline == points[0] and placement.previous == points[0]
    assert placement.summary.latest == points[1] and placement.summary.count == 3


def test_a_late_score_older_than_the_baseline_becomes_the_new_baseline() -> None:
    placement = insert([_point(2, 15, 7)], _point(1, 20, 0))
    assert placement.baseline is None
    assert placement.summary.baseline.total == 20


def test_an_amended_score_replaces_its_earlier_revision_in_the_series() -> None:
    placement = insert([_point(1, 18, 0), _point(2, 15, 7)], _point(2, 9, 7))
    assert placement.summary.count == 2 and placement.summary.latest.total == 9


def test_a_late_score_gives_the_next_score_a_new_previous_and_leaves_the_rest() -> None:
    points = [_point(1, 18, 0), _point(3, 11, 14), _point(4, 10, 21)]
    late = _point(2, 15, 7)
    [replaced] = insert(points, late).later
    assert (replaced.point, replaced.baseline, replaced.previous) == (points[1], points[0], late)


def test_a_late_first_score_gives_every_later_score_a_new_baseline() -> None:
    points = [_point(2, 15, 7), _point(3, 11, 14)]
    intake = _point(1, 20, 0)
    later = insert(points, intake).later
    assert [(r.point, r.baseline, r.previous) for r in later] == [(points[0], intake, intake),
                                                                  (points[1], intake, points[0])]


def test_a_score_placed_last_changes_nothing_after_it() -> None:
    assert insert([_point(1, 18, 0)], _point(2, 15, 7)).later == ()


# --- a batch at a time (issue 10: the placement is pure, the stored points read once) --------------

A, B = ("t", "client-a", "ep-1", "phq9"), ("t", "client-b", "ep-1", "phq9")


def _summary(*points: Point) -> Summary:
    placement = append(None, points[0])
    for p in points[1:]:
        placement = append(placement.summary, p)
    return placement.summary


def test_a_batch_in_administration_order_needs_no_stored_points() -> None:
    summaries = {A: _summary(_point(1, 18, 0))}
    arrivals = [Arrival(A, _point(2, 15, 7), True), Arrival(A, _point(3, 12, 14), True),
                Arrival(B, _point(4, 20, 0), True)]
    assert needing_points(summaries, arrivals) == set()
    placements = place_batch(summaries, {}, arrivals)
    assert [(p.baseline.total if p.baseline else None, p.previous.total if p.previous else None)
            for p in placements] == [(18, 18), (18, 15), (None, None)]


def test_two_late_scores_in_one_batch_are_placed_among_each_other_from_one_read() -> None:
    """Sessions 1 and 4 stored; 2 and 3 arrive late together: 3's previous is 2, not the stored 1,
    and 4 is re-placed after 3."""
    s1, s2, s3, s4 = _point(1, 20, 0), _point(2, 18, 7), _point(3, 16, 14), _point(4, 14, 21)
    summaries = {A: _summary(s1, s4)}
    arrivals = [Arrival(A, s2, True), Arrival(A, s3, True)]
    assert needing_points(summaries, arrivals) == {A}
    first, second = place_batch(summaries, {A: [s1, s4]}, arrivals)
    assert (first.previous, second.previous, second.baseline) == (s1, s2, s1)
    assert [(r.point, r.previous) for r in second.later] == [(s4, s3)]
    assert second.summary.count == 4 and second.summary.latest == s4


def test_an_amendment_needs_the_stored_points_even_when_it_is_the_latest() -> None:
    s1, s2 = _point(1, 20, 0), _point(2, 18, 7)
    summaries = {A: _summary(s1, s2)}
    corrected = Point(s2.submission_id, 10, s2.at)
    arrivals = [Arrival(A, corrected, False)]
    assert needing_points(summaries, arrivals) == {A}
    [placement] = place_batch(summaries, {A: [s1, s2]}, arrivals)
    assert placement.summary.count == 2 and placement.summary.latest.total == 10


def test_placing_without_the_points_a_late_score_needs_is_refused() -> None:
    summaries = {A: _summary(_point(1, 20, 0), _point(3, 16, 14))}
    with pytest.raises(KeyError):
        place_batch(summaries, {}, [Arrival(A, _point(2, 18, 7), True)])
