"""The client view's chart geometry (services/gateway/charts.py): a synthetic client's PHQ-9 and SRS
over six weekly sessions, with a rupture at session 3 repaired at session 5, a not-on-track alert at
the session-4 checkpoint, and what the charts say when the record carries no fit or no value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from jinja2 import Environment, FileSystemLoader

from rapport.services.gateway.charts import Scale, episode_charts, session_numbers, shape_path
from rapport.services.gateway.records import AlertShown, EpisodeRecord, ScoreShown, TransitionShown
from rapport.services.gateway.views import TEMPLATES
from rapport.shared.contracts.alert import Alert, Evidence

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
PHQ9 = [18.0, 17.0, 17.0, 16.0, 12.0, 9.0]
SRS = [38.0, 37.5, 31.0, 33.0, 38.0, 39.0]


def score(instrument: str, n: int, total: float, *, session_number: int | None = None,
          subscales: dict[str, float] | None = None, hour: int = 0) -> ScoreShown:
    phq = instrument == "phq9"
    parameters: dict[str, Any] = ({"caseness_cutoff": 10.0, "reliable_change": 6.0, "reliable_change_source": "R56"}
                                  if phq else {"concern_cutoff": 36.0} if instrument == "srs" else {})
    baseline = PHQ9[0] if phq else SRS[0]
    return ScoreShown(
        submission_id=f"{instrument}-{n}", revision=1, instrument=instrument,
        administered_at=T0 + timedelta(days=7 * (n - 1), hours=hour), session_number=session_number, total=total,
        score={"kind": "outcome" if phq else "alliance", "better": "lower" if phq else "higher", "total": total,
               "total_min": 0.0, "total_max": 27.0 if phq else 40.0 if instrument == "srs" else 60.0,
               "subscales": subscales or {}},
        change=None if n == 1 else {"baseline_total": baseline, "change_from_baseline": total - baseline,
                                    "reliable": "none"},
        parameters=parameters)


def alert(alert_id: str, kind: str, instrument: str, evidence: list[dict[str, Any]], *, status: str = "open",
          resolution: str | None = None, transitions: list[TransitionShown] | None = None) -> AlertShown:
    return AlertShown(
        alert_id=alert_id, kind=kind, severity="high", status=status, client_id="client-0001",
        episode_id="ep-1", clinician_id="clin-1", instrument=instrument, subscale=None, opened_at=T0,
        updated_at=T0, headline="h", evidence_words="w", repair_prompt=None, priority_raised=False, escalated=False,
        resolution=resolution, resolved_reason=None, version=len(transitions or []) or 1, evidence=evidence,
        transitions=transitions or [])


def evidence(submission: str, **values: Any) -> dict[str, Any]:
    return {"rule_id": "r", "rule_version": "1", "summary": "s", "submission_id": submission,
            "administered_at": T0.isoformat(), "instrument": submission.split("-")[0], "score": 0.0,
            "values": values}


def transition(name: str, by: str, at: datetime) -> TransitionShown:
    return TransitionShown(version=1, transition=name, by=by, at=at, status="resolved" if name == "resolved"
                           else "open", severity="high")


def record(alerts: list[AlertShown] | None = None) -> EpisodeRecord:
    scores = []
    for n in range(1, 7):  # the PHQ-9 and the SRS of one session on the same day
        scores += [score("phq9", n, PHQ9[n - 1]), score("srs", n, SRS[n - 1], hour=1)]
    return EpisodeRecord(client_id="client-0001", episode_id="ep-1", scores=scores, alerts=alerts or [])


RUPTURE = alert("a-rupture", "alliance_rupture", "srs", [evidence("srs-3", value=31.0, level_to_regain=36.0)],
                status="resolved", resolution="repaired",
                transitions=[transition("raised", "rapport/alerts", T0), transition("resolved", "rapport/alerts", T0)])
OFF_TRACK = alert("a-off", "not_on_track", "phq9", [evidence("phq9-4", session=4, expected=12.5, boundary=15.0)])


def test_sessions_are_counted_as_the_alerts_service_counts_them() -> None:
    scores = [score("phq9", 1, 10), score("srs", 1, 38, hour=1), score("phq9", 2, 9),
              score("phq9", 3, 9, session_number=7)]
    assert session_numbers(scores) == [1, 1, 2, 7]  # one day is one session; a sent session number wins


def test_each_total_is_a_point_at_its_session_and_higher_scores_sit_higher() -> None:
    charts = episode_charts(record())
    [phq9] = charts.outcome
    [srs] = charts.alliance
    total = phq9.series[0]
    assert [(p.session, p.value) for p in total.points] == list(zip(range(1, 7), PHQ9, strict=True))
    assert [p.session for p in srs.series[0].points] == [1, 2, 3, 4, 5, 6]
    ys = [p.y for p in total.points]
    assert ys[0] < ys[-1]  # 18 is drawn above 9 (SVG y runs down)
    xs = [p.x for p in total.points]
    assert xs == sorted(xs) and xs == [p.x for p in srs.series[0].points]  # one session axis for both
    left, top, right, bottom = phq9.plot
    assert all(left < x < right for x in xs) and all(top <= y <= bottom for y in ys)


def test_the_caseness_line_and_reliable_change_band_come_from_the_scores_parameters() -> None:
    [phq9] = episode_charts(record()).outcome
    [caseness] = phq9.guides
    assert (caseness.kind, caseness.value) == ("caseness", 10.0)
    band = phq9.band
    assert band is not None and (band.baseline, band.low, band.high) == (18.0, 12.0, 24.0)
    assert band.y_top < caseness.y and band.y_bottom < caseness.y  # 12-24 is all above the line at 10
    assert any("source R56" in n for n in phq9.notes)


def test_srs_has_its_concern_line_and_no_band_because_the_registry_has_no_reliable_change_for_it() -> None:
    [srs] = episode_charts(record()).alliance
    assert [(g.kind, g.value) for g in srs.guides] == [("concern", 36.0)]
    assert srs.band is None
    assert any("No reliable-change value" in n for n in srs.notes)


def test_without_a_fit_the_legend_says_the_expected_trajectory_is_not_available() -> None:
    [phq9] = episode_charts(record()).outcome
    assert phq9.expected == () and phq9.boundary == ()
    assert any(n.startswith("Expected trajectory: not available") for n in phq9.notes)


def test_the_expected_score_and_boundary_are_drawn_at_the_checkpoint_a_not_on_track_alert_looked_at() -> None:
    [phq9] = episode_charts(record([OFF_TRACK])).outcome
    [expected] = phq9.expected
    [boundary] = phq9.boundary
    assert (expected.session, expected.value, boundary.session, boundary.value) == (4, 12.5, 4, 15.0)
    assert expected.x == phq9.series[0].points[3].x
    assert boundary.y < expected.y  # worse (higher) sits higher
    assert [(m.kind, m.session, m.label) for m in phq9.marks] == [("raised", 4, "raised: not on track")]


def test_a_rupture_is_marked_where_it_was_raised_and_its_repair_where_the_srs_regained_its_level() -> None:
    charts = episode_charts(record([RUPTURE]))
    [srs] = charts.alliance
    assert [(m.kind, m.session, m.shape, m.label, m.placed) for m in srs.marks] == [
        ("rupture", 3, "triangle", "rupture", "evidence"),
        ("repaired", 5, "diamond", "repaired", "rule"),  # session 4 (33) is below 36; session 5 (38) is not
    ]
    assert charts.outcome[0].marks == ()  # an SRS alert is on the SRS chart only
    assert srs.marks[0].x == srs.series[0].points[2].x
    # two marks at different sessions share the one lane above the plot
    assert srs.marks[0].y == srs.marks[1].y < srs.plot[1]


def test_marks_at_one_session_are_stacked_not_drawn_over_each_other() -> None:
    second = alert("a-second", "alliance_rupture", "srs", [evidence("srs-3", value=31.0)])
    [srs] = episode_charts(record([RUPTURE, second])).alliance
    at_three = [m for m in srs.marks if m.session == 3]
    assert len(at_three) == 2 and at_three[0].y != at_three[1].y


def test_a_resolution_by_hand_is_placed_at_the_last_session_before_it() -> None:
    by_hand = alert("a-hand", "reliable_deterioration", "phq9", [evidence("phq9-2")], status="resolved",
                    resolution="by_hand", transitions=[transition("raised", "rapport/alerts", T0),
                                                      transition("resolved", "clin-1", T0 + timedelta(days=22))])
    [phq9] = episode_charts(record([by_hand])).outcome
    assert [(m.kind, m.session, m.placed) for m in phq9.marks] == [("raised", 2, "evidence"),
                                                                   ("resolved", 4, "time")]


def test_wai_sr_subscales_are_series_of_their_own_with_shapes() -> None:
    scores = [score("waisr", n, 40.0 + n, subscales={"goal": 13.0, "task": 14.0, "bond": 13.0 + n})
              for n in range(1, 4)]
    [wai] = episode_charts(EpisodeRecord(client_id="c", episode_id="e", scores=scores, alerts=[])).alliance
    assert [(s.name, s.shape) for s in wai.series] == [("total", "circle"), ("bond", "triangle"),
                                                      ("goal", "square"), ("task", "diamond")]
    assert [p.value for p in wai.series[1].points] == [14.0, 15.0, 16.0]


def test_scale_and_shapes() -> None:
    y = Scale(0, 27, 200, 20)
    assert (y(0), y(27), y(13.5)) == (200, 20, 110)
    assert shape_path("square", 10, 10, 5) == "M5,5h10v10h-10Z"
    assert shape_path("triangle", 0, 0).startswith("M0,")


def test_the_template_writes_every_point_and_marker_with_its_numbers() -> None:
    charts = episode_charts(record([RUPTURE, OFF_TRACK]), {"phq9": "PHQ-9", "srs": "SRS"})
    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True)
    macro = environment.get_template("client_chart.html").module.chart_svg  # type: ignore[attr-defined]
    svg = str(macro(charts.alliance[0], shape_path))
    assert svg.count('data-series="total" data-session=') == 6
    assert 'data-session="3" data-total="31"' in svg
    assert 'data-kind="rupture" data-alert-id="a-rupture" data-alert-kind="alliance_rupture" data-session="3"' in svg
    assert 'role="img" aria-labelledby="chart-srs-title chart-srs-desc"' in svg
    assert "<title id=\"chart-srs-title\">SRS by session</title>" in svg
    phq = str(macro(charts.outcome[0], shape_path))
    assert 'data-guide="caseness" data-value="10"' in phq and 'data-band="reliable-change"' in phq
    assert 'data-trajectory="boundary" data-session="4" data-value="15"' in phq


def test_a_long_marker_label_pushes_the_next_session_s_marker_into_a_lane_of_its_own() -> None:
    near = alert("a-near", "not_on_track", "srs", [evidence("srs-2")])  # "raised: not on track" is wide
    [srs] = episode_charts(record([RUPTURE, near])).alliance
    by_id = {(m.alert_id, m.kind): m for m in srs.marks}
    assert by_id[("a-near", "raised")].y != by_id[("a-rupture", "rupture")].y  # sessions 2 and 3
    assert by_id[("a-rupture", "repaired")].y == by_id[("a-near", "raised")].y  # session 5 is clear of it again


def test_the_words_in_the_right_margin_never_overlap() -> None:
    [phq9] = episode_charts(record()).outcome  # the caseness line (10) and the last total (9) are close
    assert {label.names for label in phq9.labels} == {"caseness", "reliable-change", "total"}
    ys = sorted(label.y for label in phq9.labels)
    assert all(b - a >= 13 for a, b in pairwise(ys))


def _page(found: EpisodeRecord) -> str:
    from starlette.requests import Request

    from rapport.services.gateway.client_view import NAMES
    from rapport.services.gateway.views import Views

    request = Request({"type": "http", "method": "GET", "path": "/clients/client-0001/episodes/ep-1", "headers": [],
                       "query_string": b""})
    views = Views()
    views.environment.globals["oidc_sign_in"] = False
    found = found.model_copy(update={"scores": [  # as the events carry them: every field, None where unknown
        s.model_copy(update={"score": {"band": None, **s.score},
                             "change": {"clinical": None, **s.change} if s.change else None}) for s in found.scores]})
    response = views.render(request, "client_episode.html", record=found, charts=episode_charts(found, NAMES),
                            names=NAMES, shape_path=shape_path)
    return bytes(response.body).decode()


def test_the_client_view_shows_the_episodes_attendance_beside_its_scores_and_says_when_there_is_none() -> None:
    from rapport.services.gateway.records import AttendanceShown
    from rapport.shared.contracts.attendance import MissedSession

    missed = [MissedSession(appointment_id=f"appt-{n}", start=T0 + timedelta(days=35 + 7 * n), kind="no_show")
              for n in (1, 2)]
    attendance = AttendanceShown(
        as_of=T0 + timedelta(days=50), attended=6, no_shows=2, cancelled=1, late_cancellations=1,
        missed_in_a_row=2, missed_since_attended=missed, cancelled_since_attended=0,
        last_attended_at=T0 + timedelta(days=35), days_since_attended=15.0, next_booked_at=None,
        ending="open", ending_recorded=False, ended_at=None)
    page = _page(record().model_copy(update={"attendance": attendance}))
    section = page[page.index('data-testid="attendance"'):page.index('aria-labelledby="numbers-heading"')]
    assert '<td data-field="attended">6</td>' in section and '<td data-field="no_shows">2</td>' in section
    assert "1 (1 late)" in section and "no show <time" in section and "(15 days ago)" in section
    assert "nothing booked" in section and '<td data-field="ending">open</td>' in section
    ended = _page(record().model_copy(update={"attendance": attendance.model_copy(
        update={"ending": "unplanned", "ended_at": T0 + timedelta(days=91)})}))
    assert "unplanned (read from the attendance)" in ended
    assert "No appointments recorded for this episode." in _page(record())


def test_a_wai_sr_rupture_s_marks_name_the_parts_that_dropped_when_it_opened() -> None:
    scores = [score("waisr", n, total, subscales={"goal": 14.0, "task": task, "bond": bond})
              for n, (total, task, bond) in enumerate([(44.0, 15.0, 15.0), (45.0, 15.0, 16.0), (36.0, 12.0, 10.0)],
                                                      start=1)]
    opened = Evidence(rule_id="alliance_rupture", rule_version="3", summary="Alliance drop (bond, task)",
                      submission_id="waisr-3", administered_at=T0 + timedelta(days=14), instrument="waisr",
                      score=36.0, values={"parts": {"bond": {"z": -3.0}, "task": {"z": -2.1}}, "session": 3})
    state = Alert(alert_id="a-wai", tenant="acme", kind="alliance_rupture", severity="high", status="open",
                  client_id="client-0001", episode_id="ep-1", instrument="waisr", opened_at=T0, updated_at=T0,
                  evidence=[opened], version=1)
    shown = AlertShown.of(state, "Alliance drop (bond, task)", "w")
    assert shown.subscale is None and shown.parts == ["bond", "task"]
    [wai] = episode_charts(EpisodeRecord(client_id="client-0001", episode_id="ep-1", scores=scores,
                                         alerts=[shown])).alliance
    [mark] = wai.marks
    assert (mark.kind, mark.session, mark.label) == ("rupture", 3, "rupture (bond, task)")
    assert mark.words == "alliance rupture (bond, task) raised at session 3"


def test_an_alert_names_no_part_for_a_total_and_the_weakest_part_a_drop_of_the_total_named() -> None:
    def opened_with(values: dict[str, Any]) -> Alert:
        return Alert(alert_id="a", tenant="acme", kind="alliance_rupture", severity="high", status="open",
                     client_id="c", episode_id="e", instrument="waisr", opened_at=T0, updated_at=T0, version=1,
                     evidence=[Evidence(rule_id="r", rule_version="3", summary="s", submission_id="x",
                                        administered_at=T0, instrument="waisr", score=1.0, values=values)])
    assert opened_with({"z": -2.5}).parts_named == ()
    assert opened_with({"weakest_part": "goal"}).parts_named == ("goal",)
    assert opened_with({"parts": {}, "weakest_part": "task"}).parts_named == ("task",)
