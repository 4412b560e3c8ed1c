"""A clinic's labelled cohort: every bad line is named with its line number and field before anything
runs, and each rule is scored against the clinician's labels (precision, recall, lead, alarm burden)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rapport.labelled_cohort import (
    FORMAT,
    CohortError,
    LabelledCohort,
    alerts_per_100_sessions,
    read_cohort,
    score_against_labels,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)
START = datetime(2026, 3, 2, 10, tzinfo=UTC)
EXAMPLE = Path(__file__).parents[1] / "fixtures" / "cohorts" / "example.jsonl"
HEADER = json.dumps({"format": FORMAT})


def submission(client: str, session: int | None, total: int = 12, **change: Any) -> str:
    items = [min(3, max(0, total - 3 * i)) for i in range(8)] + [0]
    body: dict[str, Any] = {"submission_id": f"{client}-s{session}", "instrument": "phq9", "client_id": client,
                            "episode_id": f"{client}-ep1",
                            "administered_at": (START + timedelta(days=7 * ((session or 1) - 1))).isoformat(),
                            "responses": {str(i + 1): v for i, v in enumerate(items)}}
    if session is not None:
        body["session"] = session
    body.update(change)
    return json.dumps({"submission": body})


def label(client: str, kind: str, **point: Any) -> str:
    return json.dumps({"label": {"alert_kind": kind, "client_id": client, "episode_id": f"{client}-ep1", **point}})


def problems(lines: list[str]) -> list[str]:
    with pytest.raises(CohortError) as caught:
        read_cohort(lines, now=NOW)
    return [str(p) for p in caught.value.problems]


def test_the_shipped_example_reads_as_six_episodes_of_seven_sessions_and_five_labels() -> None:
    cohort = read_cohort(EXAMPLE.read_text().splitlines(), now=NOW)
    assert len({(s.client_id, s.episode_id) for s in cohort.submissions}) == 6 and cohort.sessions == 42
    assert sorted(label.alert_kind for label in cohort.labels) == [
        "critical_item", "not_on_track", "not_on_track", "not_on_track", "reliable_deterioration"]
    # Fay's submissions carry no session numbers: their order by administered_at gives them
    assert [s.session for s in cohort.submissions if s.client_id == "example-fay"] == [1, 2, 3, 4, 5, 6, 7]
    assert read_cohort(cohort.lines(), now=NOW).lines() == cohort.lines()  # what lines() writes reads back


def test_a_file_of_another_format_is_refused_on_its_first_line() -> None:
    assert problems([json.dumps({"format": "rapport-labelled-cohort/2"}), submission("kim", 1)]) == [
        f'line 1, format: the first line names the format: {{"format": "{FORMAT}"}}']
    assert problems([]) == [f"line 1, format: empty file: the first line names the format {FORMAT}"]


def test_every_bad_line_is_named_with_its_number_and_field() -> None:
    found = problems([
        HEADER,
        submission("kim", 1),
        "{not json",
        submission("kim", 2, responses={"1": 2}),  # item 9 missing: ingest refuses it
        submission("lee", 1, episode_id=None),
        submission("kim", 1),  # the same submission id again
        submission("max", -1),
        label("kim", "not_on_track"),  # no point given
        label("kim", "worse"),
        label("nobody", "not_on_track", session=6),
        label("kim", "not_on_track", at="2026-04-06"),  # no offset
        json.dumps({"submission": {}, "label": {}}),
    ])
    text = "\n".join(found)
    assert "line 3, line: not JSON" in text
    assert "line 4, submission.responses: phq9 is missing item(s) 2, 3" in text  # ingest's own words
    assert "line 5, submission.episode_id: required in a labelled cohort" in text
    assert "line 6, submission.submission_id: also on line 2" in text
    assert "line 7, submission.session:" in text
    assert "line 8, label.session: give the labelled point as session or as at" in text
    assert "line 9, label.alert_kind: one of critical_item, alliance_rupture" in text
    assert "line 10, label.episode_id: no submission in the file has this client and episode" in text
    assert "line 11, label.at: an ISO-8601 time with its UTC offset" in text
    assert "line 12, line: each line after the first holds one key" in text
    assert not any(p.startswith("line 2,") for p in found)  # the good line is not blamed


def event(client: str, alert_id: str, evidence: list[tuple[str, int]], transition: str = "raised",
          title: str = "Not on track") -> dict[str, Any]:
    """An alert event as the alerts service publishes it, with evidence (rule, session) on the client's episode."""
    return {"type": f"rapport.alert.{transition}.v1", "data": {"transition": transition, "alert": {
        "alert_id": alert_id, "client_id": client, "episode_id": f"{client}-ep1",
        "evidence": [{"rule_id": rule, "submission_id": f"{client}-s{session}", "summary": f"{title} on PHQ-9: 14"}
                     for rule, session in evidence]}}}


def cohort_of(lines: list[str]) -> LabelledCohort:
    return read_cohort([HEADER, *lines], now=NOW)


def test_a_rule_is_scored_against_the_clinicians_labels() -> None:
    """Three clients over eight sessions. The clinician judged Kim not on track at session 6 and Lee at
    session 8; the checkpoint rule flagged Kim at 6 and Max (who recovered) at 6, missed Lee, and the
    expected-trajectory rule flagged Kim at 4, inside the checkpoint's alert, and again (the same
    alert updated) at 5."""
    cohort = cohort_of([*(submission(c, s) for c in ("kim", "lee", "max") for s in range(1, 9)),
                        label("kim", "not_on_track", session=6), label("lee", "not_on_track", session=8)])
    events = [event("kim", "a1", [("expected_trajectory", 4)]),
              event("kim", "a1", [("expected_trajectory", 4), ("expected_trajectory", 5)], "updated"),
              event("kim", "a1", [("expected_trajectory", 4), ("not_on_track", 6)], "updated"),
              event("max", "a2", [("not_on_track", 6)]),
              event("someone-else", "a3", [("not_on_track", 6)])]  # not in the cohort: ignored
    scores = score_against_labels(cohort, events)
    checkpoint, trajectory = scores["not_on_track"], scores["expected_trajectory"]
    assert (checkpoint.labelled, checkpoint.flagged, checkpoint.true_positives) == (2, 2, 1)
    assert (checkpoint.precision, checkpoint.recall, checkpoint.median_lead_sessions) == (0.5, 0.5, 0)
    assert (trajectory.precision, trajectory.recall, trajectory.median_lead_sessions) == (1.0, 0.5, 2)
    # two alerts hold the checkpoint's evidence, one the trajectory's, over 24 sessions
    assert (checkpoint.alerts, checkpoint.alerts_per_100_sessions) == (2, 8.33)
    assert (trajectory.alerts, trajectory.alerts_per_100_sessions) == (1, 4.17)
    assert alerts_per_100_sessions(cohort, events) == 8.33
    assert (checkpoint.unlabelled_by_finding, trajectory.unlabelled_by_finding) == ({"Not on track": 1}, {})
    nothing = scores["critical_item"]
    assert (nothing.labelled, nothing.flagged, nothing.precision, nothing.recall) == (0, 0, None, None)


def test_a_label_given_by_time_has_its_lead_in_days() -> None:
    """Ana's review was on the evening of session 5's day: the rule spoke that morning, 0.4 days before."""
    cohort = cohort_of([*(submission("ana", s) for s in range(1, 7)),
                        label("ana", "reliable_deterioration", at=(START + timedelta(days=28, hours=9)).isoformat())])
    scores = score_against_labels(cohort, [event("ana", "a1", [("reliable_deterioration", 5)],
                                                 title="Reliable deterioration")])
    figures = scores["reliable_deterioration"]
    assert (figures.recall, figures.median_lead_sessions, figures.median_lead_days) == (1.0, None, 0.4)


def test_false_alarms_are_told_apart_by_what_they_said() -> None:
    """Nobody in this cohort was judged to deteriorate; two clients' noise looked like a sudden loss."""
    cohort = cohort_of([submission(c, s) for c in ("cai", "dan", "eve") for s in range(1, 5)])
    events = [event("cai", "a1", [("reliable_deterioration", 3)], title="Possible sudden loss"),
              event("dan", "a2", [("reliable_deterioration", 4)], title="Possible sudden loss"),
              event("eve", "a3", [("reliable_deterioration", 2)], title="Reliable deterioration")]
    figures = score_against_labels(cohort, events)["reliable_deterioration"]
    assert (figures.precision, figures.recall) == (0.0, None)
    assert figures.unlabelled_by_finding == {"Possible sudden loss": 2, "Reliable deterioration": 1}


def test_the_earliest_of_two_labels_on_one_episode_counts() -> None:
    cohort = cohort_of([*(submission("bea", s) for s in range(1, 9)),
                        label("bea", "not_on_track", session=8), label("bea", "not_on_track", session=6)])
    figures = score_against_labels(cohort, [event("bea", "a1", [("not_on_track", 6)])])["not_on_track"]
    assert (figures.labelled, figures.median_lead_sessions) == (1, 0)
