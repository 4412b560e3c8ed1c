"""The NHS Talking Therapies cohort rule and the dropout figures on ended episodes, as plain functions
(services/gateway/lead_figures.py): which ended episodes finished a course of treatment (at least two
attended sessions, R54; a first and a last score on both PHQ-9 and GAD-7), which ended in the period,
whose they are, and what is counted among them. Each criterion is tested on both sides with a named
synthetic client."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from rapport.services.gateway.lead_figures import (
    UNASSIGNED,
    AlertFacts,
    EpisodeEnding,
    EpisodeScore,
    FigureFilters,
    ReadModel,
    count,
    ended_episodes,
    ending_counts,
)

NOVEMBER = FigureFilters(since=date(2026, 11, 1), until=date(2026, 11, 30))


def at(month: int, day: int, hour: int = 9, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def outcome(*, case: bool = True, recovered: bool | None = True, improved: bool = True,
            deteriorated: bool = False) -> dict[str, Any]:
    """talking_therapies as scoring puts it on a score."""
    return {"case_at_start": case, "recovered": recovered if case else None, "reliable_improvement": improved,
            "reliable_deterioration": deteriorated,
            "reliably_recovered": (bool(recovered) and improved) if case else None}


def ended(client: str, attended: int = 6, ending: str = "planned", when: datetime | None = None) -> EpisodeEnding:
    moment = when or at(11, 20)
    return EpisodeEnding(client, f"{client}-ep1", ending, moment, moment + timedelta(hours=1), attended)


def measured(client: str, clinician: str | None = "clin-a", *, phq9: int = 2, gad7: int = 2,
             latest: dict[str, Any] | None = None) -> list[EpisodeScore]:
    """`phq9` and `gad7` administrations of the client's episode in October, the last carrying `latest`."""
    found = [EpisodeScore(client, f"{client}-ep1", clinician, "phq9", at(10, 1 + i), f"{client}-phq-{i}",
                          outcome() if i else None) for i in range(phq9)]
    found += [EpisodeScore(client, f"{client}-ep1", clinician, "gad7", at(10, 1 + i), f"{client}-gad-{i}",
                           outcome() if i or phq9 else None) for i in range(gad7)]
    if latest is not None:
        found.append(EpisodeScore(client, f"{client}-ep1", clinician, "phq9", at(10, 20), f"{client}-phq-last",
                                  latest))
    return found


def test_two_attended_sessions_finish_a_course_and_one_does_not() -> None:
    episodes = ended_episodes([ended("ada", attended=2), ended("ben", attended=1), ended("cal", attended=0)],
                              [*measured("ada"), *measured("ben"), *measured("cal")], NOVEMBER)
    assert {e.client_id: e.course for e in episodes} == {
        "ada": "finished", "ben": "fewer_than_two_contacts", "cal": "fewer_than_two_contacts"}


def test_a_course_needs_a_first_and_a_last_score_on_both_measures() -> None:
    episodes = ended_episodes(
        [ended("dee"), ended("eli"), ended("fay"), ended("gus")],
        [*measured("dee", phq9=2, gad7=2), *measured("eli", phq9=1, gad7=2), *measured("fay", phq9=2, gad7=1),
         *measured("gus", phq9=0, gad7=0)], NOVEMBER)
    assert {e.client_id: (e.course, e.phq9_scores, e.gad7_scores) for e in episodes} == {
        "dee": ("finished", 2, 2), "eli": ("unpaired", 1, 2), "fay": ("unpaired", 2, 1), "gus": ("unpaired", 0, 0)}


def test_only_planned_and_unplanned_endings_in_the_period_count_both_days_included() -> None:
    endings = [ended("hal", when=at(11, 1, 0, 0)),  # the first moment of the period
               ended("ida", ending="unplanned", when=at(11, 30, 23, 59)),  # the last minute of `until`
               ended("jon", when=at(10, 31, 23, 59)), ended("kim", when=at(12, 1, 0, 0)),
               EpisodeEnding("lou", "lou-ep1", "open", None, at(11, 15), 4)]
    scores = [s for c in ("hal", "ida", "jon", "kim", "lou") for s in measured(c)]
    assert [e.client_id for e in ended_episodes(endings, scores, NOVEMBER)] == ["hal", "ida"]
    assert [e.client_id for e in ended_episodes(endings, scores, FigureFilters())] == ["hal", "ida", "jon", "kim"]


def test_an_ending_without_a_date_is_dated_when_rapport_learned_it() -> None:
    undated = EpisodeEnding("max", "max-ep1", "unplanned", None, at(11, 10), 0)
    [episode] = ended_episodes([undated], [], NOVEMBER)
    assert (episode.ended_at, episode.clinician_id, episode.course) == (at(11, 10), None, "fewer_than_two_contacts")


def test_an_episode_is_its_latest_scores_clinicians_and_the_filter_narrows_to_them() -> None:
    handed_over = [*measured("ned", "clin-a"),
                   EpisodeScore("ned", "ned-ep1", "clin-b", "srs", at(10, 25), "ned-srs-1")]  # any instrument
    endings = [ended("ned"), ended("ola")]
    scores = [*handed_over, *measured("ola", "clin-a")]
    assert {e.client_id: e.clinician_id for e in ended_episodes(endings, scores, FigureFilters())} == {
        "ned": "clin-b", "ola": "clin-a"}
    assert [e.client_id for e in ended_episodes(endings, scores, FigureFilters("clin-b"))] == ["ned"]


def test_the_outcome_is_the_one_on_the_episodes_latest_phq9_or_gad7() -> None:
    worse = outcome(case=True, recovered=False, improved=False, deteriorated=True)
    [episode] = ended_episodes([ended("pia")], measured("pia", latest=worse), NOVEMBER)
    assert episode.outcome == worse


def test_another_episode_of_the_same_client_is_not_counted_with_this_one() -> None:
    second = [EpisodeScore("ray", "ray-ep2", "clin-a", m, at(10, d), f"ray2-{m}-{d}", outcome())
              for m in ("phq9", "gad7") for d in (3, 4)]
    [episode] = ended_episodes([ended("ray")], [*measured("ray", phq9=1, gad7=1), *second], NOVEMBER)
    assert (episode.phq9_scores, episode.gad7_scores, episode.course) == (1, 1, "unpaired")


def test_recovery_among_those_at_caseness_and_improvement_among_the_finished_courses() -> None:
    endings = [ended("sam"), ended("tia"), ended("uma", ending="unplanned"), ended("vic"), ended("wes", attended=1),
               ended("xan", ending="unplanned")]
    scores = [*measured("sam", latest=outcome(case=True, recovered=True, improved=True)),
              *measured("tia", latest=outcome(case=True, recovered=False, improved=True)),
              *measured("uma", latest=outcome(case=False, improved=False, deteriorated=True)),
              *measured("vic", latest=outcome(case=True, recovered=True, improved=False)),
              *measured("wes", latest=outcome(case=True, recovered=True, improved=True)),  # one session
              *measured("xan", phq9=1)]  # no last PHQ-9
    counted = ending_counts("all", ended_episodes(endings, scores, NOVEMBER))
    assert (counted.ended, counted.planned, counted.unplanned, counted.fewer_than_two_contacts,
            counted.unpaired, counted.finished) == (6, 4, 2, 1, 1, 4)
    assert (counted.case_at_start, counted.recovered, counted.reliable_improvement,
            counted.reliable_deterioration, counted.reliably_recovered) == (3, 2, 2, 1, 1)
    assert (counted.recovery_rate, counted.reliable_improvement_rate, counted.reliable_recovery_rate,
            counted.dropout_rate) == (0.6667, 0.5, 0.3333, 0.3333)


def test_no_ended_episode_gives_no_rates_rather_than_zero() -> None:
    nothing = ending_counts("all", [])
    assert (nothing.ended, nothing.dropout_rate, nothing.recovery_rate, nothing.reliable_improvement_rate) == (
        0, None, None, None)


def test_dropout_by_clinician_counts_unplanned_endings_among_each_ones_ended_episodes() -> None:
    endings = [ended("yan", ending="unplanned"), ended("zoe"), ended("abe", ending="unplanned"),
               ended("bea", ending="unplanned", attended=1)]
    scores = [*measured("yan", "clin-a"), *measured("zoe", "clin-a"), *measured("abe", "clin-b")]
    alert = AlertFacts("a1", "alliance_rupture", "open", "clin-a", "yan", "yan-ep1", at(11, 2), None, at(11, 2), None)
    model = ReadModel([alert], frozenset(), ended_episodes(endings, scores, NOVEMBER))
    found = count(model, NOVEMBER)
    rows = {r.clinician: (r.ended, r.unplanned, r.dropout_rate) for r in found.endings_by_clinician}
    assert rows == {"clin-a": (2, 1, 0.5), "clin-b": (1, 1, 1.0), UNASSIGNED: (1, 1, 1.0)}
    assert (found.endings.ended, found.endings.unplanned, found.endings.dropout_rate) == (4, 3, 0.75)
    shown = found.as_json()["talking_therapies"]
    assert shown["closed_episodes_known"] is True and shown["ended"] == 4
    assert [r["clinician"] for r in shown["by_clinician"]] == ["(no clinician)", "clin-a", "clin-b"]
