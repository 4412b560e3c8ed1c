"""The alert rules, told as clinic stories with synthetic people (pure: no broker, no database)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from rapport.services.alerts.rules import AlertKey, EpisodeAlerts, EpisodeState, Evaluation, evaluate, load_ruleset
from rapport.services.alerts.rules.ruleset import Parameter, ReliableDrop, RuleSet
from rapport.services.alerts.rules.state import Rupture
from rapport.services.alerts.rules.trajectory import IntakeBand, TrajectoryFit, fit
from rapport.services.scoring.domain import change
from rapport.services.scoring.domain import score as score_of
from rapport.shared.contracts.alert import Alert, AlertTransition, Notification
from rapport.shared.contracts.score import ChangeFromBaseline, CriticalItemFinding, ScoreComputed, Scored
from rapport.shared.instruments import load_registry

RULES = load_ruleset()
T0 = datetime(2026, 2, 2, 9, tzinfo=UTC)
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)  # the engine's clock, unrelated to when measures were taken
PROMPTS = RULES.alliance_rupture.prompts


def _at(session: int) -> datetime:
    return T0 + timedelta(days=7 * (session - 1))


def srs(total: float, session: int, *, items: tuple[float, float, float, float] | None = None,
        numbered: bool = True) -> ScoreComputed:
    """An SRS: items 1 relationship (bond), 2 goals (goal), 3 approach (task), 4 overall."""
    values = items or (total / 4,) * 4
    assert abs(sum(values) - total) < 1e-9
    scored = Scored(instrument="srs", instrument_version="3", kind="alliance", better="higher", total=total,
                    total_min=0, total_max=40, risk_checked=True)
    return ScoreComputed(
        tenant="clinic-a", submission_id=f"srs-{session}", revision=1, client_id="client-001", episode_id="ep-001",
        clinician_id="clin-07", administered_at=_at(session) + timedelta(hours=1),
        session_number=session if numbered else None, score=scored,
        responses=dict(enumerate(values, start=1)), parameters={"concern_cutoff": 36},
    )


def waisr(goal: float, task: float, bond: float, session: int) -> ScoreComputed:
    scored = Scored(instrument="waisr", instrument_version="1", kind="alliance", better="higher",
                    total=goal + task + bond, total_min=12, total_max=60, risk_checked=True,
                    subscales={"goal": goal, "task": task, "bond": bond})
    return ScoreComputed(tenant="clinic-a", submission_id=f"wai-{session}", revision=1, client_id="client-002",
                         episode_id="ep-002", clinician_id="clin-07", administered_at=_at(session),
                         session_number=session, score=scored)


def phq9(total: float, session: int, *, baseline: float | None = None, previous: float | None = None,
         item9: float = 0, risk_checked: bool = True, numbered: bool = True) -> ScoreComputed:
    """A PHQ-9 with the change scoring would compute (reliable change 6, caseness 10)."""
    change = None
    if baseline is not None:
        delta = total - baseline
        reliable = "deteriorated" if delta >= 6 else "improved" if delta <= -6 else "none"
        change = ChangeFromBaseline(baseline_total=baseline, baseline_at=_at(1), previous_total=previous,
                                    change_from_baseline=delta, reliable_change_value=6, reliable=reliable)
    critical = [CriticalItemFinding(item=9, value=item9, threshold=1, label="thoughts of self-harm")] \
        if item9 >= 1 else []
    scored = Scored(instrument="phq9", instrument_version="1", kind="outcome", better="lower", total=total,
                    total_min=0, total_max=27, caseness=total >= 10, critical_items=critical,
                    item_level=risk_checked, risk_checked=risk_checked)
    return ScoreComputed(
        tenant="clinic-a", submission_id=f"phq-{session}", revision=1, client_id="client-001", episode_id="ep-001",
        clinician_id="clin-07", administered_at=_at(session), session_number=session if numbered else None,
        score=scored, change=change, parameters={"reliable_change": 6, "caseness_cutoff": 10},
    )


def scored(instrument_id: str, totals: list[float], client: str) -> list[ScoreComputed]:
    """A client's series through the real registry and scoring functions, as the scoring service sends
    it (total-only, which these instruments without critical items score the same as item-level)."""
    instrument = load_registry().get(instrument_id)
    assert instrument is not None and not instrument.critical_items
    parameters: dict[str, str | float | None] = {}
    if instrument.caseness:
        parameters["caseness_cutoff"] = instrument.caseness.value
    if instrument.reliable_change:
        parameters["reliable_change"] = round(instrument.reliable_change.points(), 2)
    out = []
    for i, total in enumerate(totals):
        movement = None if i == 0 else change(instrument, baseline_total=totals[0], baseline_at=_at(1),
                                              previous_total=totals[i - 1], current_total=total)
        out.append(ScoreComputed(
            tenant="clinic-a", submission_id=f"{instrument_id}-{client}-{i + 1}", revision=1, client_id=client,
            episode_id=f"ep-{client}", clinician_id="clin-07", administered_at=_at(i + 1), session_number=i + 1,
            score=score_of(instrument, {}, reported_total=total, item_level=False), change=movement,
            parameters=parameters))
    return out


def phq9_series(totals: list[float], first_session: int = 1) -> list[ScoreComputed]:
    out = []
    for i, total in enumerate(totals):
        session = first_session + i
        out.append(phq9(total, session, baseline=totals[0] if i else None, previous=totals[i - 1] if i else None))
    return out


@dataclass
class Episode:
    """Feeds scores to the engine in order, keeping the open alerts the way the service does."""

    state: EpisodeState | None = None
    open: dict[AlertKey, Alert] = field(default_factory=dict)
    log: list[AlertTransition] = field(default_factory=list)

    def give(self, score: ScoreComputed) -> Evaluation:
        episode = EpisodeAlerts(self.state, self.open)
        evaluation = episode.take(score, rules=RULES, now=NOW)
        self.state = episode.state
        self.log += evaluation.transitions
        return evaluation

    def give_all(self, scores: list[ScoreComputed]) -> Evaluation:
        evaluation = None
        for score in scores:
            evaluation = self.give(score)
        assert evaluation is not None
        return evaluation


def only(evaluation: Evaluation) -> AlertTransition:
    assert len(evaluation.transitions) == 1, [t.transition for t in evaluation.transitions]
    return evaluation.transitions[0]


def note(evaluation: Evaluation) -> Notification:
    assert len(evaluation.notifications) == 1, evaluation.notifications
    return evaluation.notifications[0]


# --- alliance rupture and repair -----------------------------------------------------------------


def test_a_client_whose_srs_falls_from_38_to_31_gets_an_alliance_alert_naming_the_bond() -> None:
    episode = Episode()
    assert episode.give(srs(38, 1, items=(9.5, 9.5, 9.5, 9.5))).transitions == []
    evaluation = episode.give(srs(31, 2, items=(6.0, 8.5, 8.5, 8.0)))
    raised = only(evaluation)
    assert raised.transition == "raised" and raised.notify
    alert = raised.alert
    assert (alert.kind, alert.instrument, alert.subscale, alert.status) == ("alliance_rupture", "srs", None, "open")
    assert alert.severity == "medium" and alert.repair_prompt == PROMPTS.bond
    evidence = alert.evidence[-1]
    assert (evidence.rule_id, evidence.rule_version) == ("alliance_rupture", RULES.alliance_rupture.version)
    assert evidence.values["previous"] == 38 and evidence.values["concern_cutoff"] == 36
    assert evidence.values["weakest_part"] == "bond"
    message = note(evaluation)
    assert message.headline.startswith("Alliance drop (bond): SRS 31, down from 38 last session")
    assert "below the concern cutoff 36" in message.headline
    assert message.prompt == PROMPTS.bond and "relationship" in message.prompt
    assert (message.client_id, message.episode_id) == ("client-001", "ep-001")


def test_two_sessions_later_the_srs_is_back_to_37_and_the_alert_resolves_as_repaired() -> None:
    episode = Episode()
    episode.give_all([srs(38, 1), srs(31, 2)])
    opened = episode.open[AlertKey("alliance_rupture", "srs", None)]
    assert opened.evidence[-1].values["level_to_regain"] == 37  # own level 38, less the floored SD of 1
    still_low = only(episode.give(srs(34, 3)))
    assert still_low.transition == "updated" and not still_low.notify
    repaired = only(episode.give(srs(37, 4)))
    assert repaired.transition == "resolved" and repaired.alert.resolution == "repaired"
    assert repaired.alert.alert_id == opened.alert_id and "37" in (repaired.reason or "")
    assert not repaired.notify and episode.open == {}
    assert episode.state is not None and episode.state.ruptures == {}


def test_a_second_low_srs_updates_the_open_alert_instead_of_raising_another() -> None:
    episode = Episode()
    episode.give_all([srs(38, 1), srs(31, 2)])
    first = episode.open[AlertKey("alliance_rupture", "srs", None)]
    evaluation = episode.give(srs(30, 3))
    updated = only(evaluation)
    assert updated.transition == "updated" and updated.alert.alert_id == first.alert_id
    assert updated.alert.version == 2 and len(updated.alert.evidence) == 2
    assert evaluation.notifications == []  # a plain update of the evidence notifies nobody
    assert [t.transition for t in episode.log].count("raised") == 1


def test_unrepaired_after_k_sessions_the_rupture_escalates_and_notifies() -> None:
    k = RULES.alliance_rupture.parameters.repair_within_sessions.value
    assert k == 2
    episode = Episode()
    episode.give_all([srs(38, 1), srs(31, 2), srs(32, 3)])
    evaluation = episode.give(srs(33, 4))
    escalated = only(evaluation)
    assert escalated.transition == "escalated" and escalated.notify
    assert escalated.alert.escalated and escalated.alert.severity == "high" and escalated.alert.status == "open"
    assert "not repaired after 2 further sessions" in (escalated.reason or "")
    message = note(evaluation)
    assert message.headline == "Rupture not repaired: SRS 33 after 2 further sessions, pre-rupture level 37"
    assert message.prompt == PROMPTS.total  # no part stood out: the general prompt
    # escalated once only; a late repair still resolves it as repaired
    assert all(t.transition != "escalated" for t in episode.give(srs(33.5, 5)).transitions)
    late = only(episode.give(srs(37.5, 6)))
    assert late.transition == "resolved" and late.alert.resolution == "repaired"


def test_the_repair_is_counted_before_the_escalation() -> None:
    episode = Episode()
    episode.give_all([srs(38, 1), srs(31, 2), srs(33, 3)])
    assert only(episode.give(srs(38, 4))).alert.resolution == "repaired"


def ruptures(evaluation: Evaluation) -> list[AlertTransition]:
    return [t for t in evaluation.transitions if t.alert.kind == "alliance_rupture"]


STEADY = [waisr(16, 16, 16, 1), waisr(16, 16, 16, 2), waisr(16, 16, 16, 3)]  # 48 of 60, every part 16 of 20


def test_sams_bond_item_one_step_lower_raises_nothing() -> None:
    """Sam (synthetic) rates the WAI-SR 48 of 60 for three sessions, every part 16. At session 4 one bond item
    is one step lower: bond 15, total 47. That is the smallest change the measure can show, not a rupture:
    v2 raised two alerts here (total and bond, each "down 1 point"). Nor does the same step at session 2,
    before the client's own level is known: no drop figure is published for WAI-SR, so none is applied."""
    episode = Episode()
    episode.give_all([*STEADY, waisr(16, 16, 15, 4)])
    assert episode.log == [] and episode.open == {}
    assert episode.state is not None and episode.state.series["waisr:bond"].count == 4  # every session was read
    early = Episode()
    early.give_all([waisr(16, 16, 16, 1), waisr(16, 16, 15, 2)])
    assert early.log == []


def test_sams_bond_collapse_raises_one_alert_that_names_the_bond() -> None:
    """Sam's bond falls from 16 to 10 at session 4 while goals and tasks hold (total 48 -> 42): one alert, on
    WAI-SR as a whole, naming the bond and asking about the relationship; not one for the total and one for
    the bond."""
    episode = Episode()
    episode.give_all(STEADY)
    evaluation = episode.give(waisr(16, 16, 10, 4))
    raised = only(evaluation)
    alert = raised.alert
    assert raised.transition == "raised" and (alert.kind, alert.instrument, alert.subscale) == (
        "alliance_rupture", "waisr", None)
    values = alert.evidence[-1].values
    assert list(values["parts"]) == ["bond"] and values["parts"]["bond"]["z"] == -3.0
    assert alert.severity == "high" and alert.repair_prompt == PROMPTS.bond
    assert alert.evidence[-1].summary.startswith("Alliance drop (bond): WAI-SR 42, 3.0 SD below the client's own "
                                                 "mean 48 (major); bond 10, 3.0 SD below")
    assert note(evaluation).prompt == PROMPTS.bond
    repaired = only(episode.give(waisr(16, 16, 15, 5)))  # bond back above its pre-rupture level 14
    assert repaired.transition == "resolved" and repaired.alert.resolution == "repaired"
    assert episode.open == {} and episode.state is not None and episode.state.ruptures == {}


def test_alexs_total_and_goal_falling_together_raise_one_alert_that_names_the_goal() -> None:
    """Alex (synthetic): WAI-SR 48 for three sessions, then goals 12 (total 44): the total and the goal part both
    fall 2 SD below Alex's own level. One alert names the goal and carries the goal prompt; task and bond held
    and are not named."""
    episode = Episode()
    episode.give_all(STEADY)
    raised = only(episode.give(waisr(12, 16, 16, 4)))
    values = raised.alert.evidence[-1].values
    assert list(values["parts"]) == ["goal"] and values["z"] == -2.0 and "weakest_part" not in values
    assert raised.alert.repair_prompt == PROMPTS.goal and raised.alert.severity == "high"
    assert raised.alert.evidence[-1].summary.startswith("Alliance drop (goal): WAI-SR 44")


def test_two_parts_falling_are_one_alert_naming_both_with_both_prompts() -> None:
    episode = Episode()
    episode.give_all(STEADY)
    raised = only(episode.give(waisr(16, 12, 12, 4)))
    assert list(raised.alert.evidence[-1].values["parts"]) == ["bond", "task"]
    assert raised.alert.repair_prompt == f"{PROMPTS.bond} {PROMPTS.task}"
    assert raised.alert.evidence[-1].summary.startswith("Alliance drop (bond, task): WAI-SR 40")


@pytest.mark.parametrize(("goal", "task", "repaired"), [(16, 14, True), (16, 13, False)])
def test_a_wai_sr_rupture_is_repaired_only_when_every_part_that_dropped_is_back(goal: float, task: float,
                                                                                 repaired: bool) -> None:
    """Robin (synthetic): task falls 16 -> 10 at session 4 (its pre-rupture level: own mean 16 less the floor
    2 = 14). At session 5 goals rise to 18, so the total is back (48 >= 46); the task at exactly 14 is
    repaired, at 13 it is not."""
    episode = Episode()
    episode.give_all(STEADY)
    episode.give(waisr(16, 10, 16, 4))
    rupture = episode.state.ruptures["waisr"] if episode.state else None
    assert rupture is not None and rupture.level_to_regain == 46 and rupture.parts_to_regain == {"task": 14}
    after = ruptures(episode.give(waisr(goal + 2, task, 16 + (16 - goal), 5)))
    assert [t.alert.resolution for t in after if t.transition == "resolved"] == (["repaired"] if repaired else [])


def test_a_part_that_drops_while_the_rupture_is_open_joins_it_and_must_be_back_too() -> None:
    """Robin's bond falls 16 -> 10 at session 4; at session 5 the bond is back (16) but the task falls to 10: the
    same alert, now naming the task, and the task joins what must be regained. At session 6 the task is 13,
    below its level 14 (and the total 45 below 46): not repaired two sessions on, so escalated; at session 7 all
    is back at 16: repaired."""
    episode = Episode()
    episode.give_all(STEADY)
    opened = only(episode.give(waisr(16, 16, 10, 4))).alert
    updated = only(episode.give(waisr(16, 10, 16, 5)))
    assert updated.alert.alert_id == opened.alert_id and list(updated.alert.evidence[-1].values["parts"]) == ["task"]
    assert episode.state is not None and episode.state.ruptures["waisr"].parts_to_regain == {"bond": 14, "task": 14}
    assert [t.transition for t in ruptures(episode.give(waisr(16, 13, 16, 6)))] == ["escalated"]  # k = 2
    assert [t.alert.resolution for t in ruptures(episode.give(waisr(16, 16, 16, 7)))] == ["repaired"]


@pytest.mark.parametrize(("bond", "repaired"), [(16, True), (15, False)])
def test_a_wai_sr_rupture_is_repaired_only_when_the_total_is_back_too(bond: float, repaired: bool) -> None:
    """Robin again: task 16 -> 10 at session 4. At session 5 the task is 14 (its level) and goals 16: the total
    is 46 with bond 16 (exactly the total's level 46: repaired) or 45 with bond 15 (not yet)."""
    episode = Episode()
    episode.give_all(STEADY)
    episode.give(waisr(16, 10, 16, 4))
    after = ruptures(episode.give(waisr(16, 14, bond, 5)))
    assert [t.alert.resolution for t in after if t.transition == "resolved"] == (["repaired"] if repaired else [])


@pytest.mark.parametrize(("bond", "severity"), [(15, None), (14, "medium"), (13, "medium"), (12, "high"),
                                                (11, "high")])
def test_a_wai_sr_part_is_read_against_its_floor_of_two_points(bond: float, severity: str | None) -> None:
    """On a steady WAI-SR (every part 16) the z is read with the part's floor of 2 points (sd_floor_series):
    bond 15 is z -0.5 (nothing), 14 is exactly -1 (minor), 13 is -1.5, 12 is exactly -2 (major), 11 -2.5."""
    assert RULES.alliance_rupture.sd_floor("waisr:bond") == 2.0 == RULES.alliance_rupture.sd_floor("waisr")
    episode = Episode()
    episode.give_all([*STEADY, waisr(16, 16, bond, 4)])
    found = [t.alert.severity for t in episode.log]
    assert found == ([severity] if severity else [])
    if severity:  # the therapist reads which it was
        assert ("(major)" in episode.log[0].alert.evidence[-1].summary) is (severity == "high")


def test_the_wai_sr_z_waits_for_three_earlier_sessions() -> None:
    two = Episode()
    two.give_all([waisr(16, 16, 16, 1), waisr(16, 16, 16, 2), waisr(16, 16, 10, 3)])
    assert two.log == []  # two earlier sessions: no own level yet, and no drop figure for WAI-SR
    three = Episode()
    three.give_all([*STEADY, waisr(16, 16, 10, 4)])
    assert len(three.log) == 1


def _with_rupture(**parameters: object) -> RuleSet:
    rupture = RULES.alliance_rupture
    changed = {name: getattr(rupture.parameters, name).model_copy(update={"value": value})
               for name, value in parameters.items()}
    return RULES.model_copy(update={"alliance_rupture": rupture.model_copy(
        update={"parameters": rupture.parameters.model_copy(update=changed)})})


@pytest.mark.parametrize(("second", "raised"), [(12.28, True), (12.29, False)])
def test_a_sourced_sd_and_reliability_give_the_jacobson_truax_drop(second: float, raised: bool) -> None:
    """Were a bond SD of 3 and a reliability of .80 sourced, the reliable drop would be 1.96 x 3 x sqrt(0.4) =
    3.72 points: 16 -> 12.28 is a drop from session 1 to 2, 16 -> 12.29 is not."""
    spec = ReliableDrop(sd=3.0, reliability=0.8)
    assert spec.points() == pytest.approx(1.96 * 3.0 * math.sqrt(2 * (1 - 0.8)))
    rules = _with_rupture(reliable_drop={"waisr:bond": spec})
    assert rules.alliance_rupture.drop_points("waisr:bond") == 3.72
    assert rules.alliance_rupture.drop_points("waisr") is None and RULES.alliance_rupture.drop_points("waisr") is None
    state = evaluate(None, waisr(16, 16, 16, 1), {}, rules=rules, now=NOW).state
    found = evaluate(state, waisr(16, 16, second, 2), {}, rules=rules, now=NOW).transitions
    assert len(found) == (1 if raised else 0)
    if raised:
        assert found[0].alert.evidence[-1].values["parts"]["bond"]["drop_points"] == 3.72


def test_a_sourced_between_person_sd_is_taken_when_it_is_the_stricter() -> None:
    """Gumz et al.: the z is read with the larger of the client's own SD and the between-person SD. With a
    between-person bond SD of 4, Sam's bond 16 -> 12 is z -1 (minor), not -2 (major) as with the floor of 2."""
    rules = _with_rupture(between_person_sd={"waisr:bond": 4.0})
    rupture = rules.alliance_rupture
    assert rupture.sd_for("waisr:bond", 1.0) == 4.0 and rupture.sd_for("waisr:bond", 5.0) == 5.0
    state = None
    for score in STEADY:
        state = evaluate(state, score, {}, rules=rules, now=NOW).state
    [raised] = evaluate(state, waisr(16, 16, 12, 4), {}, rules=rules, now=NOW).transitions
    bond = raised.alert.evidence[-1].values["parts"]["bond"]
    assert (bond["z"], bond["sd_used"], bond["own_sd"]) == (-1.0, 4.0, 0.0) and raised.alert.severity == "high"


@pytest.mark.parametrize(("level", "repaired"), [(15.0, True), (15.01, False)])
def test_a_bond_alert_raised_per_part_before_v3_is_still_followed_to_its_repair(level: float, repaired: bool) -> None:
    """An episode that v2 left with a bond alert of its own (beside the total's) keeps it followed: it
    resolves as repaired once the bond is back at its pre-rupture level (15 of 15: repaired; 15 of 15.01:
    not yet), and no second bond alert is raised."""
    episode = Episode()
    episode.give_all(STEADY)
    legacy = Rupture(opened_by="wai-3", level_to_regain=level)
    assert episode.state is not None
    episode.state = episode.state.model_copy(update={"ruptures": {"waisr:bond": legacy}})
    old = Alert(alert_id="legacy-bond", tenant="clinic-a", kind="alliance_rupture", severity="medium", status="open",
                client_id="client-002", episode_id="ep-002", instrument="waisr", subscale="bond", opened_at=NOW,
                updated_at=NOW, evidence=[], version=1)
    episode.open = {AlertKey.of(old): old}
    moved = episode.give(waisr(16, 16, 15, 4)).transitions
    assert [(t.alert.alert_id, t.alert.resolution) for t in moved] == ([("legacy-bond", "repaired")] if repaired
                                                                       else [])


def test_a_drop_against_the_clients_own_level_is_found_without_a_cutoff_or_a_big_step() -> None:
    episode = Episode()
    episode.give_all([srs(40, 1), srs(40, 2), srs(40, 3), srs(39.2, 4)])
    assert episode.open == {}  # 0.8 down: under the one-point drop, and z = -0.8
    raised = only(episode.give(srs(38.5, 5)))
    values = raised.alert.evidence[-1].values
    assert raised.transition == "raised" and raised.alert.severity == "medium"
    assert values["z"] == pytest.approx(-1.3) and values["own_sessions"] == 4
    assert "concern_cutoff" not in values and "drop_points" not in values


def test_a_major_person_relative_drop_is_high_severity() -> None:
    episode = Episode()
    episode.give_all([srs(38, 1), srs(39, 2), srs(38, 3)])
    raised = only(episode.give(srs(35, 4)))
    assert raised.alert.severity == "high" and raised.alert.evidence[-1].values["z"] <= -2


def test_without_earlier_sessions_only_the_cutoff_can_flag_a_first_srs() -> None:
    raised = only(Episode().give(srs(30, 1)))
    assert raised.alert.evidence[-1].values["level_to_regain"] == 36
    assert "z" not in raised.alert.evidence[-1].values
    assert Episode().give(srs(37, 1)).transitions == []
    assert Episode().give(srs(30, 1).model_copy(update={"parameters": {}})).transitions == []


@pytest.mark.parametrize(("second", "raised"), [(38.0, True), (38.1, False)])
def test_a_drop_of_exactly_one_srs_point_is_a_rupture_and_of_0_9_is_not(second: float, raised: bool) -> None:
    """Ana (synthetic): SRS 39, then 38 (down 1: OpenFIT's SRSChangeFromLast <= -1) or 38.1 (down 0.9).
    Both stay above the cutoff 36 and there are too few sessions for a person-relative z."""
    episode = Episode()
    episode.give_all([srs(39, 1), srs(second, 2)])
    assert bool(episode.open) is raised
    if raised:
        assert "drop_points" in episode.open[AlertKey("alliance_rupture", "srs", None)].evidence[-1].values


@pytest.mark.parametrize(("total", "raised"), [(35.9, True), (36.0, False)])
def test_an_srs_of_36_is_not_below_the_cutoff_and_35_9_is(total: float, raised: bool) -> None:
    assert bool(Episode().give(srs(total, 1)).transitions) is raised


@pytest.mark.parametrize(("fifth", "severity"), [(37.6, None), (37.5, "medium"), (36.6, "medium"), (36.5, "high")])
def test_person_relative_thresholds_are_inclusive(fifth: float, severity: str | None) -> None:
    """Ben (synthetic): SRS 39, 39, 38, 38 (own mean 38.5, SD floored to 1), then a fifth session. At z =
    -0.9 nothing; at exactly -1 a minor rupture; at -1.9 still minor; at exactly -2 a major one (high).
    No step from the previous 38 reaches the 1-point drop below 37, and none is below the cutoff."""
    episode = Episode()
    episode.give_all([srs(39, 1), srs(39, 2), srs(38, 3), srs(38, 4)])
    assert episode.open == {}
    evaluation = episode.give(srs(fifth, 5))
    if severity is None:
        assert evaluation.transitions == []
        return
    raised = only(evaluation)
    values = raised.alert.evidence[-1].values
    assert raised.alert.severity == severity and values["z"] == pytest.approx(fifth - 38.5)
    assert ("drop_points" in values) is (fifth <= 37.0)


def test_the_person_relative_z_waits_for_three_earlier_sessions() -> None:
    """Cleo (synthetic): SRS 39.5, 38.6, then 38.0. Against her own two earlier scores 38.0 would be about
    1 SD low, but z needs three earlier sessions, and the step of 0.6 is no drop: nothing. With 39.5,
    39.5, 38.6 before it, the same 38.0 is 1.2 SD below her own mean: a minor rupture."""
    assert Episode().give_all([srs(39.5, 1), srs(38.6, 2), srs(38.0, 3)]).transitions == []
    episode = Episode()
    episode.give_all([srs(39.5, 1), srs(39.5, 2), srs(38.6, 3)])
    three = only(episode.give(srs(38.0, 4)))
    values = three.alert.evidence[-1].values
    assert values["own_sessions"] == 3 and values["z"] == pytest.approx(-1.2) and "drop_points" not in values


# --- critical items ------------------------------------------------------------------------------


def test_phq9_item_9_of_1_on_a_first_submission_raises_a_risk_alert_and_a_notification() -> None:
    evaluation = Episode().give(phq9(12, 1, item9=1))
    raised = only(evaluation)
    assert raised.transition == "raised" and raised.alert.kind == "critical_item"
    assert raised.alert.severity == "high" and raised.alert.evidence[-1].values["items"] == {"9": 1}
    assert raised.alert.evidence[-1].values["risk_levels"] == {"9": "lower"}
    message = note(evaluation)
    assert message.headline == "Risk item endorsed on PHQ-9: item 9 = 1 (thoughts of self-harm)"
    assert message.prompt == RULES.critical_item.prompt and not evaluation.risk_unchecked


def test_every_new_critical_finding_notifies_and_the_alert_waits_for_a_clinician() -> None:
    episode = Episode()
    episode.give(phq9(12, 1, item9=1))
    again = episode.give(phq9(11, 2, baseline=12, previous=12, item9=2))
    assert only(again).transition == "updated" and note(again).severity == "critical"
    assert only(again).reason == "severity raised from high to critical"
    assert episode.give(phq9(9, 3, baseline=12, previous=11)).transitions == []  # not cleared by a score
    assert AlertKey("critical_item", "phq9", None) in episode.open


@pytest.mark.parametrize(("item9", "severity", "level"), [(1, "high", "lower"), (2, "critical", "higher"),
                                                      (3, "critical", "higher")])
def test_rosa_s_item_9_answer_grades_the_risk_alert(item9: float, severity: str, level: str) -> None:
    """Rosa (synthetic) answers PHQ-9 item 9 with 1 ('several days'), 2 or 3 ('nearly every day'). Each is
    a risk alert that notifies at once; 2 and 3 are the higher-risk group of Simon et al. 2013 and Louzon
    et al. 2016 (risk rising with the answer), so they are critical, and 1 is high."""
    evaluation = Episode().give(phq9(14, 1, item9=item9))
    raised = only(evaluation)
    assert (raised.alert.severity, raised.notify) == (severity, True)
    assert raised.alert.evidence[-1].values["risk_levels"] == {"9": level}
    assert raised.alert.evidence[-1].summary.endswith(", at the higher-risk level") is (level == "higher")
    assert note(evaluation).severity == severity


def test_an_ungraded_risk_item_is_critical_at_any_answer() -> None:
    """Sam (synthetic) answers CORE-10 item 6 (plans to end life) with 1: no source grades item 6, so the
    alert is critical, as at 4."""
    scored_ = Scored(instrument="core10", instrument_version="1", kind="outcome", better="lower", total=8,
                     total_min=0, total_max=40, caseness=False, risk_checked=True,
                     critical_items=[CriticalItemFinding(item=6, value=1, threshold=1, label="plans to end life")])
    core = phq9(8, 1).model_copy(update={"score": scored_, "submission_id": "core-1", "parameters": {}})
    raised = only(Episode().give(core))
    assert raised.alert.severity == "critical" and raised.alert.evidence[-1].values["risk_levels"] == {"6": "higher"}
    assert not raised.alert.evidence[-1].summary.endswith("higher-risk level")


def test_a_total_only_phq9_cannot_be_checked_for_risk_and_says_so_without_an_alert() -> None:
    evaluation = Episode().give(phq9(14, 1, risk_checked=False))
    assert evaluation.transitions == [] and evaluation.risk_unchecked


def test_an_alert_from_a_total_only_score_says_risk_could_not_be_checked() -> None:
    episode = Episode()
    episode.give(phq9(8, 1))
    evaluation = episode.give(phq9(15, 2, baseline=8, previous=8, risk_checked=False))
    raised = only(evaluation)
    assert raised.alert.evidence[-1].values["risk_checked"] is False
    assert "risk items could not be checked" in raised.alert.evidence[-1].summary
    assert "Risk items could not be checked" in note(evaluation).evidence and evaluation.risk_unchecked


# --- reliable deterioration and possible sudden loss ----------------------------------------------


def test_reliable_deterioration_from_baseline_raises_and_resolves_when_no_longer_worse() -> None:
    episode = Episode()
    scores = phq9_series([8, 15, 12])
    episode.give(scores[0])
    raised = only(episode.give(scores[1]))
    assert raised.alert.kind == "reliable_deterioration" and raised.alert.severity == "high"
    assert raised.alert.evidence[-1].summary.startswith("Reliable deterioration on PHQ-9: 15, +7 from baseline 8")
    resolved = only(episode.give(scores[2]))
    assert resolved.alert.resolution == "no_longer_deteriorated"


def test_a_sudden_worsening_is_a_possible_sudden_loss_while_it_lasts() -> None:
    episode = Episode()
    scores = phq9_series([18, 10, 9, 16, 15, 12])
    episode.give_all(scores[:3])
    loss = [t for t in episode.give(scores[3]).transitions if t.alert.kind == "reliable_deterioration"]
    assert len(loss) == 1 and loss[0].alert.severity == "medium"
    values = loss[0].alert.evidence[-1].values
    assert values["sudden_loss"] is True and "1 and 2 of 3" in values["sudden_loss_criteria"]
    assert loss[0].alert.evidence[-1].summary.startswith("Possible sudden loss on PHQ-9: 16, +7 since last session")
    stays = episode.give(scores[4])  # 15: still 6 worse than the pre-loss 9
    assert all(t.alert.kind != "reliable_deterioration" for t in stays.transitions)
    ends = [t for t in episode.give(scores[5]).transitions if t.alert.kind == "reliable_deterioration"]
    assert ends[0].alert.resolution == "no_longer_deteriorated"


def test_a_small_worsening_from_a_high_score_is_not_a_sudden_loss() -> None:
    episode = Episode()
    episode.give_all(phq9_series([20, 22, 25]))
    # 20 -> 22 -> 25: each step under the reliable-change value 6; and 25 is +5 from baseline
    assert episode.state is not None and episode.state.series["phq9"].count == 3  # every step ran
    assert all(t.alert.kind != "reliable_deterioration" for t in episode.log)


def test_noor_s_rise_from_her_first_score_to_her_second_is_a_deterioration_not_a_sudden_loss() -> None:
    """Noor (synthetic): PHQ-9 8 at intake, 15 at session 2. That is a reliable deterioration from
    baseline (+7), but the step from the first score to the second is not a sudden loss in the standard
    criteria (suddengains: identify_sg_1to2 = FALSE). Turned on, the same step would be one."""
    raised = only(Episode().give_all(phq9_series([8, 15])))
    values = raised.alert.evidence[-1].values
    assert raised.alert.severity == "high" and values["sudden_loss"] is False
    assert "sudden loss" not in raised.alert.evidence[-1].summary
    assert RULES.reliable_deterioration.parameters.sudden_loss_first_interval.value is False
    first_interval = Parameter[bool](value=True, source=["R81"], confidence="proposal", note="test")
    rules = RULES.model_copy(update={"reliable_deterioration": RULES.reliable_deterioration.model_copy(update={
        "parameters": RULES.reliable_deterioration.parameters.model_copy(
            update={"sudden_loss_first_interval": first_interval})})})
    state = evaluate(None, phq9_series([8, 15])[0], {}, rules=rules, now=NOW).state
    turned_on = evaluate(state, phq9_series([8, 15])[1], {}, rules=rules, now=NOW)
    assert turned_on.transitions[0].alert.evidence[-1].values["sudden_loss"] is True


@pytest.mark.parametrize(("fourth", "loss"), [(15, True), (14, False)])
def test_a_sudden_loss_needs_a_step_of_at_least_the_reliable_change_value(fourth: float, loss: bool) -> None:
    """Omar (synthetic): 18, 10, 9, then 15 (+6, exactly the PHQ-9 reliable change: a possible sudden
    loss) or 14 (+5: none). Neither is a reliable deterioration from the baseline 18."""
    episode = Episode()
    episode.give_all(phq9_series([18, 10, 9, fourth]))
    found = [t for t in episode.log if t.alert.kind == "reliable_deterioration"]
    assert bool(found) is loss
    if loss:
        assert found[0].alert.severity == "medium" and found[0].alert.evidence[-1].values["sudden_loss"] is True


@pytest.mark.parametrize(("pre_loss", "loss"), [(60, True), (64, False)])
def test_a_sudden_loss_needs_a_step_of_at_least_a_quarter_of_the_pre_loss_score(pre_loss: float, loss: bool) -> None:
    """Pat (synthetic), PCL-5 (reliable change 15): 70 at intake, then pre_loss, then pre_loss + 15. From
    60 the step of 15 is 25% of 60: a possible sudden loss; from 64 it is 23%: not one (criterion 2)."""
    episode = Episode()
    episode.give_all(scored("pcl5", [70, pre_loss, pre_loss + 15], "client-pat"))
    found = [t for t in episode.log if t.alert.kind == "reliable_deterioration"]
    assert bool(found) is loss


# --- not on track ---------------------------------------------------------------------------------


def test_stalled_at_session_9_after_at_risk_at_session_6() -> None:
    episode = Episode()
    scores = phq9_series([18, 17, 17, 16, 17, 16, 16, 15, 16, 10])
    episode.give_all(scores[:5])
    assert not any(k.kind == "not_on_track" for k in episode.open)
    at_risk = only(episode.give(scores[5]))
    assert at_risk.transition == "raised" and at_risk.alert.severity == "medium"
    assert at_risk.alert.evidence[-1].summary.startswith("Not on track on PHQ-9 at session 6")
    assert at_risk.alert.repair_prompt == RULES.not_on_track.prompt
    assert only(episode.give(scores[6])).notify is False
    episode.give(scores[7])
    stalled = episode.give(scores[8])
    moved = only(stalled)
    assert moved.transition == "updated" and moved.alert.severity == "high" and moved.notify
    assert note(stalled).headline.startswith("Stalled on PHQ-9 at session 9")
    back = only(episode.give(scores[9]))
    assert back.alert.resolution == "back_on_track" and "reliably improved" in (back.reason or "")


def test_the_checkpoints_are_at_session_6_and_9_not_one_session_earlier() -> None:
    """Dee (synthetic) stays at PHQ-9 17 from intake: nothing at session 5, 'at risk' (medium) at 6, still
    medium at 8, 'stalled' (high) at 9."""
    episode = Episode()
    scores = phq9_series([17] * 9)
    episode.give_all(scores[:5])
    assert not episode.log
    episode.give(scores[5])
    key = AlertKey("not_on_track", "phq9", None)
    assert episode.open[key].severity == "medium"
    episode.give_all(scores[6:8])
    assert episode.open[key].severity == "medium"
    episode.give(scores[8])
    assert episode.open[key].severity == "high"


def test_out_of_the_clinical_range_is_back_on_track() -> None:
    episode = Episode()
    scores = phq9_series([12, 12, 12, 12, 11, 11, 9])
    episode.give_all(scores[:6])
    assert AlertKey("not_on_track", "phq9", None) in episode.open
    assert only(episode.give(scores[6])).alert.resolution == "back_on_track"


def test_without_session_numbers_the_session_is_the_count_of_administration_days() -> None:
    episode = Episode()
    for session in range(1, 7):
        episode.give(srs(38, session, numbered=False))  # an SRS each session...
        if session in (1, 3, 6):  # ...and a PHQ-9 now and then, the same day
            baseline = None if session == 1 else 17.0
            episode.give(phq9(17, session, baseline=baseline, previous=baseline, numbered=False))
    assert episode.state is not None and episode.state.sessions == 6
    raised = [t for t in episode.log if t.alert.kind == "not_on_track"]
    assert len(raised) == 1 and raised[0].alert.evidence[-1].values["session"] == 6


def test_not_on_track_with_an_open_rupture_raises_priority_on_both() -> None:
    episode = Episode()
    outcome = phq9_series([18, 17, 17, 16, 17, 16])
    alliance = [38, 38, 38, 38, 31, 31]
    for i in range(5):
        episode.give(srs(alliance[i], i + 1))
        episode.give(outcome[i])
    assert AlertKey("alliance_rupture", "srs", None) in episode.open
    episode.give(srs(alliance[5], 6))
    evaluation = episode.give(outcome[5])
    by_kind = {t.alert.kind: t for t in evaluation.transitions}
    assert by_kind["not_on_track"].alert.priority_raised and by_kind["not_on_track"].transition == "raised"
    rupture = by_kind["alliance_rupture"]
    assert rupture.transition == "updated" and rupture.alert.priority_raised and rupture.notify
    assert "falling alliance (open alliance rupture on SRS; rule priority v1)" in (rupture.reason or "")
    assert all(n.headline.startswith("Priority") for n in evaluation.notifications)


def test_not_on_track_with_an_alliance_below_its_own_mean_raises_priority() -> None:
    episode = Episode()
    outcome = phq9_series([18, 17, 17, 16, 17, 16])
    alliance = [38, 38.5, 38, 38.5, 38, 37.8]  # below the client's own mean, but no rupture
    for i in range(6):
        episode.give(srs(alliance[i], i + 1))
        evaluation = episode.give(outcome[i])
    assert not any(k.kind == "alliance_rupture" for k in episode.open)
    raised = only(evaluation)
    assert raised.alert.kind == "not_on_track" and raised.alert.priority_raised
    # the alliance recovers: priority is lowered quietly
    episode.give(srs(39, 7))
    lowered = [t for t in episode.log[-1:] if t.alert.kind == "not_on_track"]
    assert lowered and not lowered[0].alert.priority_raised and not lowered[0].notify


@pytest.mark.parametrize(("alliance", "raised"), [
    ([38, 38.5, 38.5, 37.9], True),  # four SRS: the latest is below the mean of the three before it
    ([38, 38, 38, 38], False),  # the latest equals the client's own mean: not falling
    ([38.5, 38.5, 37.9], False),  # only two earlier SRS: too few to call it falling
])
def test_priority_needs_three_earlier_alliance_scores_and_the_latest_below_their_mean(
        alliance: list[float], raised: bool) -> None:
    """Eve (synthetic) is not on track on PHQ-9 at session 6 (18 to 16). Her SRS was given from session
    7 - len(alliance) onwards; the not_on_track alert's priority is raised only with a falling alliance."""
    episode = Episode()
    outcome = phq9_series([18, 17, 17, 16, 17, 16])
    first = 7 - len(alliance)
    for session in range(1, 7):
        if session >= first:
            episode.give(srs(alliance[session - first], session))
        episode.give(outcome[session - 1])
    assert not any(k.kind == "alliance_rupture" for k in episode.open)
    not_on_track = episode.open[AlertKey("not_on_track", "phq9", None)]
    assert not_on_track.priority_raised is raised


def test_the_rupture_names_the_part_that_fell_most_not_the_lowest_one() -> None:
    """Jo (synthetic): SRS items (relationship, goals, approach, overall) 10, 6, 10, 10 then 9, 6, 8, 10: the
    total falls from 36 to 33. Goals stayed the lowest (6) but did not move; the relationship fell 1 and the
    approach 2: the alert names the task (the approach), the part that fell most."""
    episode = Episode()
    assert episode.give(srs(36, 1, items=(10, 6, 10, 10))).transitions == []
    raised = only(episode.give(srs(33, 2, items=(9, 6, 8, 10))))
    assert raised.alert.evidence[-1].values["weakest_part"] == "task"
    assert raised.alert.repair_prompt == PROMPTS.task


def test_a_clinics_floor_below_one_point_sets_the_level_to_regain_after_one_session() -> None:
    """A clinic that signs off an SD floor of 0.5: after one earlier SRS (38) the level to regain is 38 less
    0.5, not less 1."""
    rules = _with_rupture(sd_floor_points=0.5)
    state = evaluate(None, srs(38, 1), {}, rules=rules, now=NOW).state
    [raised] = evaluate(state, srs(31, 2), {}, rules=rules, now=NOW).transitions
    assert raised.alert.evidence[-1].values["level_to_regain"] == 37.5


def test_when_no_part_fell_the_rupture_names_the_lowest_part() -> None:
    """Dana (synthetic): SRS items (relationship, goals, approach, overall) 8, 6, 8, 8 then 8, 7, 9, 5: the
    total falls from 30 to 29 through the overall item, which maps to no part. The bond held, goals and
    approach rose: the alert names the lowest part, goals (7), not the bond that merely stayed."""
    episode = Episode()
    episode.give(srs(30, 1, items=(8, 6, 8, 8)))
    raised = only(episode.give(srs(29, 2, items=(8, 7, 9, 5))))
    assert raised.alert.evidence[-1].values["weakest_part"] == "goal"
    assert raised.alert.repair_prompt == PROMPTS.goal


# --- rules are data ----------------------------------------------------------------------------


def test_every_rule_and_parameter_carries_sources_and_a_confidence() -> None:
    rules = [RULES.critical_item, RULES.alliance_rupture, RULES.reliable_deterioration, RULES.not_on_track,
             RULES.priority]
    for rule in rules:
        assert rule.source and rule.confidence and rule.version
        parameters = getattr(rule, "parameters", None)
        for name in type(parameters).model_fields if parameters is not None else []:
            parameter = getattr(parameters, name)
            assert isinstance(parameter, Parameter) and parameter.source and parameter.note, name
    p = RULES.alliance_rupture.parameters
    assert p.repair_within_sessions.confidence == "proposal" and p.drop_points.value == {"srs": 1.0}
    assert RULES.not_on_track.parameters.at_risk_session.confidence == "proposal"
    assert RULES.alliance_rupture.drop_points("srs") == 1.0 and RULES.alliance_rupture.drop_points("sai") is None
    assert p.reliable_drop.value == {} and p.between_person_sd.value == {}  # none sourced: none invented
    assert p.sd_floor_series.confidence == "proposal"


# --- change-based rules only where change can be reliable; screeners drive no outcome alerts --------


def test_kim_s_k10_falls_from_45_to_21_by_session_6_and_is_not_called_not_on_track() -> None:
    """Kim (synthetic) starts at K10 45 and is at 21 by session 6, still above the caseness cutoff 20.
    K10 has no reliable-change value, so no improvement can count as reliable: the checkpoint rule
    used to call Kim 'not on track'. It does not run on K10 now; neither does reliable deterioration,
    even when Kim's score climbs back to 45 at session 9. Only the expected trajectory could speak."""
    episode = Episode()
    episode.give_all(scored("k10", [45, 40, 34, 30, 25, 21], "client-kim"))
    assert episode.log == []
    episode.give_all(scored("k10", [45, 40, 34, 30, 25, 21, 35, 40, 45], "client-kim")[6:])
    assert episode.log == []
    k10 = load_registry().get("k10")
    assert k10 is not None and not k10.runs_change_rules and "no reliable-change value" in k10.alert_scope()


@pytest.mark.parametrize("screener", ["phq2", "gad2"])
def test_lee_s_screener_scores_drive_no_outcome_alert(screener: str) -> None:
    """Lee (synthetic) fills in a two-item screener every week: 6, 6, 6, 6, 6, 6, 6, 6, 6 (in the
    clinical range, never improving), then 0 and 6 again. A screener says whether to assess further,
    not how Lee is changing: no not_on_track, no deterioration, no sudden loss, and no expected-trajectory
    alert even with a fit that Lee is far beyond."""
    totals = [6, 6, 6, 6, 6, 6, 6, 6, 6, 0, 6]
    series = scored(screener, totals, "client-lee")
    fits = {screener: _fit_everyone_recovers(screener)}
    state, log = None, []
    for s in series:
        result = evaluate(state, s, {}, rules=RULES, now=NOW, trajectories=fits)
        state, log = result.state, log + result.transitions
    assert log == []
    instrument = load_registry().get(screener)
    assert instrument is not None and instrument.screener and not instrument.runs_trajectory_rule


def _fit_everyone_recovers(instrument_id: str) -> TrajectoryFit:
    series = [[(1, 6.0), *((k, 0.0) for k in range(2, 12))] for _ in range(30)]
    return fit(series, tenant="clinic-a", instrument=instrument_id, better="lower",
               bands=[IntakeBand(label="all", min=0)], percentile=0.9, min_episodes=20, max_session=20,
               fitted_at=NOW)


def test_pat_s_pcl5_rise_from_40_to_46_raises_nothing_and_to_55_is_reliable_deterioration() -> None:
    """Pat (synthetic), PCL-5: 40 at intake, 46 at session 2 (was a 'high' reliable deterioration with the
    DSM-IV PCL's 5 points). With the PCL-5's 15 nothing is raised; at 55 (session 3, +15 from baseline)
    Pat has reliably deteriorated."""
    series = scored("pcl5", [40, 46, 55], "client-pat")
    episode = Episode()
    episode.give_all(series[:2])
    assert episode.log == []
    raised = only(episode.give(series[2]))
    assert raised.alert.kind == "reliable_deterioration" and raised.alert.severity == "high"
    assert raised.alert.evidence[-1].values["reliable_change"] == 15


def test_a_screener_runs_no_change_rule_even_with_a_reliable_change_value() -> None:
    """Were a reliable-change value ever added to the PHQ-2, it would still be a screener: Lee's PHQ-2,
    0 at intake and stuck at 6 through session 9, raises no outcome alert (the checkpoint would)."""
    from rapport.shared.instruments import Registry
    from rapport.shared.instruments.model import ReliableChangeSpec

    registry = load_registry()
    phq2 = registry.get("phq2")
    assert phq2 is not None and phq2.screener
    spec = ReliableChangeSpec(method="fixed", value=2, source=["R70"], confidence="unverified")
    with_rc = phq2.model_copy(update={"reliable_change": spec})
    patched = Registry([with_rc if i.id == "phq2" else i for i in registry])
    series = [s.model_copy(update={
        "parameters": {**s.parameters, "reliable_change": 2.0},
        "change": None if s.change is None else s.change.model_copy(update={"reliable_change_value": 2.0}),
    }) for s in scored("phq2", [0, 6, 6, 6, 6, 6, 6, 6, 6], "client-lee")]
    state, log = None, []
    for s in series:
        result = evaluate(state, s, {}, rules=RULES, now=NOW, registry=patched)
        state, log = result.state, log + result.transitions
    assert log == []


@pytest.mark.parametrize(("fourth", "loss"), [(20, True), (21, False)])
def test_an_ors_that_falls_suddenly_is_a_possible_sudden_loss_where_higher_is_better(fourth: float,
                                                                                    loss: bool) -> None:
    """Ana (synthetic), ORS (higher is better): 18, 26, 27, then a fall to 20 or 21. The step down is the
    worsening on this measure, as a rise is on PHQ-9: 27 -> 20 is at least the ORS reliable change and 25% of
    27 (a possible sudden loss); 27 -> 21 is not both."""
    ors = load_registry().get("ors")
    assert ors is not None and ors.reliable_change is not None
    rcv = round(ors.reliable_change.points(), 2)
    episode = Episode()
    episode.give_all(scored("ors", [18, 26, 27, fourth], "client-ana"))
    found = [t.alert.evidence[-1].values for t in episode.log if t.alert.kind == "reliable_deterioration"]
    assert bool(found) is loss and (not loss or found[0]["sudden_loss"] is True)
    assert (27 - fourth >= rcv and 27 - fourth >= 0.25 * 27) is loss
