"""The disengagement rule's figures on the seeded synthetic cohort (issue 15 item 5): reproducible for a
seed, consistent with themselves, and the cohort's dropout rate is the literature's."""

from __future__ import annotations

from rapport.attendance_evaluation import DROPOUT_RATE, evaluate


def test_the_figures_are_reproducible_and_consistent() -> None:
    figures = evaluate(clients=120, seed=7)
    assert figures == evaluate(clients=120, seed=7)
    assert 0 < figures.true_positives <= min(figures.alerted_clients, figures.dropouts)
    assert figures.precision == round(figures.true_positives / figures.alerted_clients, 3)
    assert figures.recall == round(figures.true_positives / figures.dropouts, 3)
    false_alerts = figures.alerted_clients - figures.true_positives
    assert sum(figures.false_alerts_by_finding.values()) == false_alerts
    assert figures.lead_days_median is not None and figures.lead_days_median > 0  # after the last session


def test_the_cohorts_dropout_rate_is_about_one_in_five() -> None:
    figures = evaluate(clients=1000, seed=3)
    assert abs(figures.dropouts / figures.clients - DROPOUT_RATE) < 0.04
