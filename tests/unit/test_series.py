"""Where a score sits in its episode: baseline and previous, in administration order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rapport.services.scoring.series import Point, append, follows, insert

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
