"""Exact scoring, told as the clinic's story. Expected values come from the published sources cited
next to each case (keys as in /work/shared/research/clinical-anchors.md §7). Synthetic people only."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rapport.services.scoring.domain import (
    band_of,
    below_concern,
    change,
    jacobson_truax_cutoff,
    nhs_talking_therapies,
    score,
)
from rapport.shared.contracts.score import ChangeFromBaseline
from rapport.shared.instruments import Instrument, load_registry
from rapport.shared.instruments.model import ReliableChangeSpec
from rapport.shared.instruments.validation import check_responses

REGISTRY = load_registry()
INTAKE = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


def shipped(instrument_id: str) -> Instrument:
    instrument = REGISTRY.get(instrument_id)
    assert instrument is not None
    return instrument


PHQ9, GAD7, CORE10, ORS, SRS = (shipped(i) for i in ("phq9", "gad7", "core10", "ors", "srs"))


def answers(instrument: Instrument, total: int) -> dict[int, float | None]:
    """Item answers (no reverse-keyed items) that add up to `total`, filling items in order."""
    responses: dict[int, float | None] = {}
    left = total
    for item in instrument.scored_items:
        value = min(item.max, max(item.min, left))
        responses[item.number] = value
        left -= int(value - item.min)
    assert left == 0
    return responses


def moved(instrument: Instrument, before: float, after: float) -> ChangeFromBaseline:
    return change(instrument, baseline_total=before, baseline_at=INTAKE, previous_total=None, current_total=after)


# --- PHQ-9: Kroenke, Spitzer & Williams (2001) [R67]; item 9 [R69][R40] --------------------------------


@pytest.mark.parametrize(("total", "band"), [
    (0, "minimal"), (4, "minimal"), (5, "mild"), (9, "mild"), (10, "moderate"), (14, "moderate"),
    (15, "moderately severe"), (19, "moderately severe"), (20, "severe"), (27, "severe"),
])
def test_phq9_band_boundaries_follow_kroenke_2001(total: int, band: str) -> None:
    assert score(PHQ9, answers(PHQ9, total)).band == band


def test_a_client_scoring_14_on_phq9_is_in_the_moderate_band_and_a_case() -> None:
    scored = score(PHQ9, answers(PHQ9, 14))
    assert (scored.total, scored.band, scored.caseness) == (14, "moderate", True)
    assert scored.risk_checked and scored.critical_items == [] and not scored.prorated


def test_a_client_scoring_9_on_phq9_is_mild_and_below_caseness() -> None:
    assert score(PHQ9, answers(PHQ9, 9)).caseness is False


def test_any_answer_above_zero_on_phq9_item_9_is_a_critical_finding() -> None:
    responses = {**answers(PHQ9, 3), 9: 1.0}
    [finding] = score(PHQ9, responses).critical_items
    assert (finding.item, finding.value, finding.threshold) == (9, 1, 1)
    assert "self-harm" in finding.label


def test_the_functional_difficulty_question_never_counts() -> None:
    with_difficulty = {**answers(PHQ9, 12), 10: 3.0}
    assert score(PHQ9, with_difficulty).total == score(PHQ9, answers(PHQ9, 12)).total == 12


def test_a_phq9_total_sent_without_items_cannot_be_checked_for_risk() -> None:
    scored = score(PHQ9, {}, reported_total=16, item_level=False)
    assert (scored.total, scored.band, scored.caseness, scored.item_level) == (16, "moderately severe", True, False)
    assert not scored.risk_checked and scored.critical_items == [] and scored.subscales == {}
    assert [w.code for w in scored.warnings] == ["risk_unchecked"]


def test_a_total_only_submission_needs_its_total() -> None:
    with pytest.raises(ValueError, match="reported_total"):
        score(PHQ9, {}, item_level=False)


def test_a_gad7_total_sent_without_items_has_no_risk_item_left_unchecked() -> None:
    scored = score(GAD7, {}, reported_total=11, item_level=False)
    assert scored.risk_checked and scored.warnings == [] and scored.band == "moderate"


# --- GAD-7: Spitzer et al. (2006) bands [R73]; NHS Talking Therapies caseness 8 [R56] --------------------


@pytest.mark.parametrize(("total", "band", "case"), [
    (4, "minimal", False), (7, "mild", False), (8, "mild", True), (10, "moderate", True), (15, "severe", True),
])
def test_gad7_bands_and_the_nhs_caseness_of_8(total: int, band: str, case: bool) -> None:
    scored = score(GAD7, answers(GAD7, total))
    assert (scored.band, scored.caseness) == (band, case)


# --- CORE-10: CORE System Trust scoring and prorating [R61]; reverse keys items 2, 3 [R63][V1] ----------


def test_core10_reverses_the_two_positively_worded_items() -> None:
    # Someone to turn to and able to cope "most or all of the time" (4), nothing else: no distress.
    well = {n: 0.0 for n in range(1, 11)} | {2: 4.0, 3: 4.0}
    assert score(CORE10, well).total == 0
    # Never anyone to turn to, never able to cope, nothing else: those two items score 4 each.
    alone = {n: 0.0 for n in range(1, 11)}
    assert score(CORE10, alone).total == 8


def test_a_full_core10_clinical_score_equals_its_item_sum() -> None:
    responses = {1: 3.0, 2: 1.0, 3: 2.0, 4: 2.0, 5: 1.0, 6: 0.0, 7: 3.0, 8: 2.0, 9: 3.0, 10: 1.0}
    # keyed: 3 + (4-1) + (4-2) + 2 + 1 + 0 + 3 + 2 + 3 + 1 = 20
    scored = score(CORE10, responses)
    assert (scored.total, scored.band, scored.caseness) == (20, "moderate to severe", True)


def test_one_missing_core10_item_is_prorated_from_the_other_nine() -> None:
    responses: dict[int, float | None] = {1: 2.0, 2: 4.0, 3: 4.0, 4: None, 5: 2.0, 6: 0.0, 7: 3.0, 8: 2.0,
                                          9: 3.0, 10: 1.0}
    # nine answered, keyed sum 2 + 0 + 0 + 2 + 0 + 3 + 2 + 3 + 1 = 13; clinical score 13 / 9 x 10 = 14.44
    scored = score(CORE10, responses)
    assert (scored.total, scored.prorated, scored.missing_items) == (14.44, True, [4])
    assert (scored.band, scored.caseness, scored.risk_checked) == ("mild", True, True)
    assert [w.code for w in scored.warnings] == ["prorated"]


def test_two_missing_core10_items_are_refused_before_scoring() -> None:
    responses: dict[int, float | None] = {n: 1.0 for n in range(1, 11)} | {4: None, 7: None}
    assert [p.code for p in check_responses(CORE10, responses)] == ["missing_items"]


def test_sam_s_core10_without_item_6_is_refused_not_prorated() -> None:
    """Sam (synthetic) skips CORE-10 item 6 (plans to end life) and answers the other nine. One missing
    item would be prorated, but never the risk item: the form is refused, naming item 6, as a PHQ-9
    without item 9 is. Sam's next form skips item 4 instead and is prorated as usual."""
    skipped_risk: dict[int, float | None] = {n: 2.0 for n in range(1, 11)} | {6: None}
    [problem] = check_responses(CORE10, skipped_risk)
    assert (problem.code, problem.field) == ("missing_items", "responses")
    assert "item 6 (plans to end life)" in problem.message and "never prorated" in problem.message
    skipped_other: dict[int, float | None] = {n: 2.0 for n in range(1, 11)} | {4: None}
    assert check_responses(CORE10, skipped_other) == []
    assert score(CORE10, skipped_other).prorated
    # score() itself, called without the check, still never calls an unanswered risk item "no risk"
    scored = score(CORE10, skipped_risk)
    assert not scored.risk_checked and scored.critical_items == []
    assert [w.code for w in scored.warnings] == ["prorated", "risk_unchecked"]


@pytest.mark.parametrize("instrument", [i for i in REGISTRY if i.critical_items], ids=lambda i: i.id)
def test_no_instrument_prorates_a_critical_item(instrument: Instrument) -> None:
    for critical in instrument.critical_items:
        responses: dict[int, float | None] = {i.number: i.min for i in instrument.scored_items}
        responses[critical.item] = None
        assert [p.code for p in check_responses(instrument, responses)] == ["missing_items"], critical.item


def test_plans_to_end_life_are_a_critical_finding_even_in_a_low_total() -> None:
    responses = {n: 0.0 for n in range(1, 11)} | {2: 4.0, 3: 4.0, 6: 1.0}
    scored = score(CORE10, responses)
    assert scored.band == "healthy" and [f.item for f in scored.critical_items] == [6]


def test_a_prorated_core10_total_between_printed_bands_takes_the_lower_band() -> None:
    # 5.56 lies between "healthy" (0-5) and "low level" (6-10): a band runs up to the next band's start.
    assert band_of(CORE10, 5.56) == "healthy" and band_of(CORE10, 10.56) == "low level"
    assert band_of(CORE10, 6) == "low level" and band_of(CORE10, 40) == "severe"


def test_the_core10_worked_example_of_section_3_1() -> None:
    # Norms via NovoPsych [R49]: general population M 4.7 SD 4.8; primary-care counselling M 19.7 SD 7.7.
    c = jacobson_truax_cutoff(mean_clinical=19.7, sd_clinical=7.7, mean_functional=4.7, sd_functional=4.8)
    assert round(c, 1) == 10.5  # consistent with the published clinical cutoff of 11 [R61]
    assert CORE10.caseness is not None and CORE10.caseness.value == 11
    # Jacobson & Truax with SD 7.7 and alpha .90: SE 2.43, S_diff 3.44, RCI 6.75 [R80] ...
    by_formula = core10_by_jacobson_truax().reliable_change
    assert by_formula is not None and round(by_formula.points(), 2) == 6.75
    # ... but the registry ships the developers' published figure, 6 (Barkham et al. 2013, 90% CI)
    assert CORE10.reliable_change is not None
    assert (CORE10.reliable_change.method, CORE10.reliable_change.points()) == ("fixed", 6)
    assert "V11" in CORE10.reliable_change.source and CORE10.reliable_change.confidence == "verified"


def core10_by_jacobson_truax() -> Instrument:
    """CORE-10 as it was shipped before issue 13: Jacobson & Truax from SD 7.7 and alpha .90."""
    spec = ReliableChangeSpec(method="jacobson_truax", sd=7.7, reliability=0.90, source=["R49", "R80"],
                              confidence="secondary")
    return CORE10.model_copy(update={"reliable_change": spec})


def test_a_jacobson_truax_change_must_exceed_the_value() -> None:
    jt = core10_by_jacobson_truax()
    assert moved(jt, 22, 15.3).reliable == "none"  # a fall of 6.7 < 6.75
    assert moved(jt, 22, 15.2).reliable == "improved"  # a fall of 6.8
    assert moved(jt, 15.2, 22).reliable == "deteriorated"
    # At the bound itself: |RC| > 1.96, not >= (Jacobson & Truax 1991 [R80]). A synthetic spec whose bound
    # is exact in floating point (SD 10, r .5: 1.96 x sqrt(2) x 10 x sqrt(.5) = 19.6), not a clinical value.
    exact = CORE10.model_copy(update={"reliable_change": ReliableChangeSpec(
        method="jacobson_truax", sd=10, reliability=0.5, source=["R80"], confidence="unverified")})
    assert exact.reliable_change is not None and exact.reliable_change.points() == 19.6
    assert moved(exact, 40, 20.4).reliable == "none" and moved(exact, 20.4, 40).reliable == "none"
    assert moved(exact, 40, 20.3).reliable == "improved" and moved(exact, 20.3, 40).reliable == "deteriorated"


def test_megan_s_core10_falls_by_6_a_reliable_improvement_and_by_5_it_is_not() -> None:
    """Megan (synthetic) starts at 21 on the CORE-10. Falling to 15 is the published reliable change of 6
    (Barkham et al. 2013); falling to 16 is not. Rising from 15 to 21 is a reliable deterioration."""
    assert moved(CORE10, 21, 15).reliable == "improved"
    assert moved(CORE10, 21, 16).reliable == "none"
    assert moved(CORE10, 21, 15.1).reliable == "none"
    assert moved(CORE10, 15, 21).reliable == "deteriorated"
    assert moved(CORE10, 15, 20.9).reliable == "none"


def test_a_core10_client_who_falls_from_20_to_10_has_recovered() -> None:
    movement = moved(CORE10, 20, 10)
    assert (movement.reliable, movement.clinical, movement.reliable_change_value) == ("improved", "recovered", 6)
    assert movement.change_from_baseline == -10


def test_a_core10_client_who_falls_from_30_to_20_improved_but_is_still_a_case() -> None:
    assert moved(CORE10, 30, 20).clinical == "improved"


# --- reliable change: NHS Talking Therapies fixed values, "6 or more" and "4 or more" [R56] -------------


def test_a_phq9_drop_of_6_is_a_reliable_improvement_and_a_drop_of_5_is_not() -> None:
    assert moved(PHQ9, 16, 10).reliable == "improved"
    assert moved(PHQ9, 16, 11).reliable == "none"
    assert moved(PHQ9, 16, 11).clinical == "unchanged"


def test_a_phq9_client_falling_from_15_to_8_has_recovered_and_from_22_to_14_has_improved() -> None:
    assert moved(PHQ9, 15, 8).clinical == "recovered"
    assert moved(PHQ9, 22, 14).clinical == "improved"


def test_a_phq9_rise_of_6_is_a_reliable_deterioration() -> None:
    movement = change(PHQ9, baseline_total=8, baseline_at=INTAKE, previous_total=12, current_total=14)
    assert (movement.reliable, movement.clinical) == ("deteriorated", "deteriorated")
    assert (movement.change_from_baseline, movement.change_from_previous) == (6, 2)


def test_a_gad7_drop_of_4_is_reliable() -> None:
    assert moved(GAD7, 12, 8).reliable == "improved" and moved(GAD7, 12, 9).reliable == "none"


def test_pat_s_pcl5_rising_from_40_to_46_is_not_a_reliable_deterioration() -> None:
    """Pat (synthetic) is treated for PTSD. A PCL-5 rise from 40 to 46 raised a 'high' reliable-deterioration
    alert when 5 points (DSM-IV PCL evidence) was shipped. PCL-5 studies put reliable change at 15 (Marx et
    al. 2022) and call 5 or less likely not reliable (Blanchard et al. 2023): 46 and 54 are not reliable
    changes from 40, 55 is; and a fall from 50 to 35 is a reliable improvement, to 36 is not."""
    pcl5 = shipped("pcl5")
    assert pcl5.reliable_change is not None and pcl5.reliable_change.points() == 15
    assert {"V9", "V10"} <= set(pcl5.reliable_change.source)
    assert moved(pcl5, 40, 46).reliable == "none"
    assert moved(pcl5, 40, 54).reliable == "none"
    assert moved(pcl5, 40, 55).reliable == "deteriorated"
    assert moved(pcl5, 50, 35).reliable == "improved"
    assert moved(pcl5, 50, 36).reliable == "none"


def test_without_a_published_reliable_change_value_no_change_is_called_reliable() -> None:
    movement = moved(shipped("phq2"), 6, 0)
    assert (movement.reliable, movement.clinical, movement.reliable_change_value) == ("none", None, None)


# --- ORS and SRS: higher is better; ORS cutoff 25 [R19]; SRS concern below 36 [R14][R20] ------------------


def test_an_ors_total_below_25_is_in_the_clinical_range() -> None:
    assert score(ORS, {1: 6.2, 2: 6.2, 3: 6.2, 4: 6.3}).caseness is True  # 24.9
    assert score(ORS, {1: 6.2, 2: 6.2, 3: 6.3, 4: 6.3}).caseness is False  # 25.0


def test_ors_marks_add_up_to_the_tenth_without_floating_point_error() -> None:
    assert score(ORS, {1: 3.3, 2: 3.3, 3: 3.3, 4: 3.3}).total == 13.2


def test_an_ors_client_rising_from_20_1_to_25_1_has_recovered() -> None:
    movement = moved(ORS, 20.1, 25.1)
    assert (movement.reliable, movement.clinical, movement.change_from_baseline) == ("improved", "recovered", 5)


def test_an_ors_fall_of_five_points_is_a_reliable_deterioration() -> None:
    assert moved(ORS, 30, 25).reliable == "deteriorated"


def test_a_client_whose_srs_is_35_9_signals_a_possible_alliance_problem() -> None:
    scored = score(SRS, {1: 9.0, 2: 9.0, 3: 9.0, 4: 8.9})
    assert scored.total == 35.9 and below_concern(SRS, scored.total) is True
    assert below_concern(SRS, 36) is False
    assert scored.caseness is None and scored.band is None and scored.kind == "alliance"


# --- subscales ------------------------------------------------------------------------------------------


def test_waisr_reports_goal_task_and_bond() -> None:
    waisr = shipped("waisr")
    responses = {n: 4.0 for n in range(1, 13)} | {3: 2.0, 5: 2.0, 7: 1.0, 9: 2.0}
    scored = score(waisr, responses)
    assert scored.subscales == {"goal": 16, "task": 16, "bond": 7}
    assert (scored.total, scored.band) == (39, "moderate")


def test_pcl5_clusters_are_item_sums_and_33_is_provisional_ptsd() -> None:
    pcl5 = shipped("pcl5")
    responses = {n: 2.0 for n in range(1, 21)} | {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0, 6: 1.0}
    scored = score(pcl5, responses)
    assert scored.subscales == {"intrusion": 0, "avoidance": 3, "cognition_mood": 14, "arousal": 12}
    assert (scored.total, scored.caseness) == (29, False)
    assert score(pcl5, {n: 2.0 for n in range(1, 21)} | {1: 0.0, 2: 0.0, 3: 0.0}).caseness is True  # 34


# --- K10: PMHC MDS prorating, round(sum / 9 x 10) [V3]; ABS bands [R75] ------------------------------------


def test_a_k10_with_one_item_missing_is_prorated_to_a_whole_point() -> None:
    k10 = shipped("k10")
    answered: dict[int, float | None] = {n: 1.0 for n in range(1, 11)}
    responses = {**answered, 1: 4.0, 2: 3.0, 10: None}
    # nine answered sum to 14; 14 / 9 x 10 = 15.56, rounded to 16: "moderate", not "low"
    scored = score(k10, responses)
    assert (scored.total, scored.band, scored.prorated) == (16, "moderate", True)


# --- NHS Talking Therapies outcome definitions [R54][R55][R56][R57] ------------------------------------------


def test_a_client_from_phq9_16_gad7_12_to_8_and_6_reliably_recovered() -> None:
    outcome = nhs_talking_therapies(16, 8, 12, 6)
    assert outcome.case_at_start and not outcome.case_at_end
    assert (outcome.phq9, outcome.gad7) == ("improved", "improved")
    assert outcome.recovered and outcome.reliable_improvement and outcome.reliably_recovered
    assert not outcome.reliable_deterioration


def test_a_client_who_drifts_below_caseness_has_recovered_but_not_reliably() -> None:
    outcome = nhs_talking_therapies(12, 9, 9, 7)
    assert outcome.recovered is True and outcome.reliable_improvement is False
    assert outcome.reliably_recovered is False


def test_recovery_does_not_apply_to_a_client_who_started_below_caseness() -> None:
    outcome = nhs_talking_therapies(9, 2, 7, 1)
    assert not outcome.case_at_start and outcome.recovered is None and outcome.reliably_recovered is None
    assert outcome.reliable_improvement  # a PHQ-9 fall of 7


def test_a_client_still_anxious_at_the_end_has_not_recovered() -> None:
    outcome = nhs_talking_therapies(18, 6, 10, 9)
    assert outcome.reliable_improvement and outcome.recovered is False


def test_a_phq9_rise_of_6_is_reliable_deterioration() -> None:
    outcome = nhs_talking_therapies(10, 16, 8, 8)
    assert outcome.reliable_deterioration and not outcome.reliable_improvement and outcome.phq9 == "deteriorated"


def test_opposite_reliable_changes_cancel_under_the_unverified_combination_rule() -> None:
    outcome = nhs_talking_therapies(16, 10, 6, 10)
    assert (outcome.phq9, outcome.gad7) == ("improved", "deteriorated")
    assert not outcome.reliable_improvement and not outcome.reliable_deterioration
