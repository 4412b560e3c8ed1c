"""The recovery-curve cohort follows the published figures it names, not the rules: half of clients
reliably improved by session 8, three quarters by 26, a few percent deteriorating, noise of the
measure's error; and its labels come from each client's true course, never from what a rule sees."""

from __future__ import annotations

import json
import math
import random
import statistics

from rapport.recovery_curves import (
    MEASURES,
    PARAMETERS,
    build_curve_cohort,
    observed_responses,
    parameters_table,
    share_improved_by,
    true_course,
)
from rapport.shared.instruments.registry import load_registry

REGISTRY = load_registry()


def test_the_dose_response_curve_passes_through_the_published_points() -> None:
    assert math.isclose(share_improved_by(8), 0.50) and math.isclose(share_improved_by(26), 0.75)
    assert 0.55 < share_improved_by(12) < 0.62  # between them, on the probit in log(sessions)


def test_drawn_clients_improve_and_deteriorate_at_the_published_rates() -> None:
    rng = random.Random(1)
    courses = [true_course(REGISTRY.get(m), rng) for m in ("phq9", "core10") for _ in range(2000)]  # type: ignore[arg-type]
    improvers = [c for c in courses if not c.deteriorates]
    assert abs(sum(c.deteriorates for c in courses) / len(courses) - PARAMETERS["deteriorate"].value) < 0.015
    by_8 = sum(c.improved_at is not None and c.improved_at <= 8 for c in improvers) / len(improvers)
    by_26 = sum(c.improved_at is not None and c.improved_at <= 26 for c in improvers) / len(improvers)
    assert abs(by_8 - 0.50) < 0.03 and abs(by_26 - 0.75) < 0.03


def test_a_true_course_reaches_reliable_improvement_at_its_drawn_session() -> None:
    """Improvers fall along log(session) and are better by the reliable change exactly at T; a true
    deterioration is labelled at the first session worse by the reliable change, whatever the noise."""
    core10 = REGISTRY.get("core10")
    assert core10 is not None
    rng = random.Random(3)
    for _ in range(200):
        course = true_course(core10, rng)
        intake = course.true_scores[0]
        if course.improved_at is not None and course.improved_at <= 12 and intake - 6 > 4.7:
            reached = next(s for s, score in enumerate(course.true_scores, start=1) if intake - score >= 6 - 1e-9)
            assert reached == math.ceil(course.improved_at - 1e-9)
            assert not course.failed
        if course.deteriorated_at is not None:
            assert course.deteriorates
            assert course.true_scores[course.deteriorated_at - 1] - intake >= 6
            assert course.true_scores[course.deteriorated_at - 2] - intake < 6


def test_labels_are_the_truth_and_the_observed_scores_carry_the_measures_error() -> None:
    cohort, courses = build_curve_cohort(300, seed=11)
    assert cohort.sessions == 300 * 12
    failed = {f"client-{n + 1:04d}" for n, c in enumerate(courses) if c.failed}
    deteriorated = {f"client-{n + 1:04d}": c.deteriorated_at for n, c in enumerate(courses)
                    if c.deteriorated_at is not None}
    assert {label.client_id for label in cohort.labels if label.alert_kind == "not_on_track"} == failed
    assert {label.client_id: label.session for label in cohort.labels
            if label.alert_kind == "reliable_deterioration"} == deteriorated
    assert all(label.session == 12 for label in cohort.labels if label.alert_kind == "not_on_track")
    # observed minus true, over CORE-10 away from the range's ends: about the measure's error
    errors = []
    for n, course in enumerate(courses):
        if course.instrument != "core10":
            continue
        client = f"client-{n + 1:04d}"
        observed = [s for s in cohort.submissions if s.client_id == client]
        for submission, true in zip(observed, course.true_scores, strict=True):
            if 5 < true < 30:
                errors.append(_core10_total(json.loads(submission.body)["responses"]) - true)
    assert abs(statistics.pstdev(errors) - MEASURES["core10"]["measurement_sd"].value) < 0.25
    assert abs(statistics.mean(errors)) < 0.2


def _core10_total(responses: dict[str, int]) -> int:
    return sum(4 - v if k in ("2", "3") else v for k, v in responses.items())  # items 2 and 3 reverse-keyed


def test_answers_add_up_to_the_total_with_the_risk_item_unendorsed_and_reverse_keys_undone() -> None:
    rng = random.Random(5)
    core10, phq9 = REGISTRY.get("core10"), REGISTRY.get("phq9")
    assert core10 is not None and phq9 is not None
    for total in (0, 11, 25, 36):
        answers = observed_responses(core10, total, rng)
        assert _core10_total(answers) == total and answers["6"] == 0
    answers = observed_responses(phq9, 24, rng)
    assert sum(answers.values()) == 24 and answers["9"] == 0


def test_the_same_seed_gives_the_same_cohort() -> None:
    assert build_curve_cohort(20, seed=4)[0].lines() == build_curve_cohort(20, seed=4)[0].lines()
    assert build_curve_cohort(20, seed=4)[0].lines() != build_curve_cohort(20, seed=5)[0].lines()


def test_every_figure_names_its_source_and_how_far_it_is_verified() -> None:
    rows = parameters_table()
    assert len(rows) == len(PARAMETERS) + sum(len(m) for m in MEASURES.values())
    for row in rows:
        assert row["confidence"] in ("secondary", "derived", "assumption") and len(str(row["source"])) > 20, row
        if row["confidence"] == "assumption":
            assert "assumption" in str(row["source"]), row  # said in its own words, not only in the mark


def test_with_early_endings_improvers_leave_at_their_first_reliably_improved_session_and_nothing_else_moves() -> None:
    """`--early-endings` (a synthetic assumption): the same draws, the same labels; an improver's course
    stops at the first session its true course has reliably improved, everyone else attends all 12."""
    everyone, all_courses = build_curve_cohort(200, seed=9)
    early, early_courses = build_curve_cohort(200, seed=9, early_endings=True)
    assert [c.observed for c in all_courses] == [c.observed for c in early_courses]
    assert everyone.labels == early.labels
    kept = {s.submission_id for s in early.submissions}
    assert kept < {s.submission_id for s in everyone.submissions}
    for course in early_courses:
        if course.improved_at is not None and course.improved_at <= 12:
            assert course.ends_at == max(2, math.ceil(course.improved_at))
            change = REGISTRY.get(course.instrument).reliable_change.value  # type: ignore[union-attr]
            assert course.true_scores[0] - course.true_scores[course.ends_at - 1] >= change - 1e-9
        else:
            assert course.ends_at == 12
        assert course.attended() == course.complete()[:course.ends_at]
    assert sum(c.ends_at < 12 for c in early_courses) > 60  # about half improve by session 8
