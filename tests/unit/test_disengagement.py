"""Attendance as an alliance signal (issue 15), told as clinic stories with synthetic people: the pure
disengagement rule and its meeting with the alliance rupture lifecycle (no broker, no database)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rapport.services.alerts.rules import (
    AlertKey,
    ClinicalPolicy,
    EpisodeAlerts,
    EpisodeState,
    PolicyValues,
    applied,
    check,
    load_ruleset,
    summarise,
)
from rapport.services.alerts.rules.attendance import Episode, judge_attendance
from rapport.shared.contracts.alert import Alert, AlertTransition
from rapport.shared.contracts.attendance import Attendance
from rapport.shared.contracts.score import ScoreComputed, Scored
from rapport.shared.instruments import load_registry
from rapport.shared.settings import Settings

RULES = load_ruleset()
RULE = RULES.disengagement
T0 = datetime(2026, 2, 2, 10, tzinfo=UTC)


def week(n: int, hours: float = 0) -> datetime:
    return T0 + timedelta(days=7 * (n - 1), hours=hours)


def srs(total: float, session: int, client: str) -> ScoreComputed:
    scored = Scored(instrument="srs", instrument_version="3", kind="alliance", better="higher", total=total,
                    total_min=0, total_max=40, risk_checked=True)
    return ScoreComputed(
        tenant="clinic-a", submission_id=f"{client}-srs-{session}", revision=1, client_id=client,
        episode_id=f"{client}-ep1", clinician_id="clin-07", administered_at=week(session, 0.9),
        session_number=session, score=scored, responses=dict(enumerate((total / 4,) * 4, start=1)),
        parameters={"concern_cutoff": 36},
    )


def appointment(client: str, session: int, status: str, **changes: Any) -> Attendance:
    return Attendance(tenant="clinic-a", appointment_id=f"{client}-appt-{session}", client_id=client,
                      episode_id=f"{client}-ep1", clinician_id="clin-07", status=status,  # type: ignore[arg-type]
                      start=week(session), recorded_at=week(session, 1), **changes)


@dataclass
class Clinic:
    """One client's episode as the alerts service keeps it: scores through the engine, appointments
    through the attendance rule, every transition logged."""

    client: str
    state: EpisodeState | None = None
    open: dict[AlertKey, Alert] = field(default_factory=dict)
    appointments: dict[str, Attendance] = field(default_factory=dict)
    log: list[AlertTransition] = field(default_factory=list)

    def _apply(self, transitions: list[AlertTransition]) -> list[AlertTransition]:
        for t in transitions:
            if t.alert.status == "resolved":
                self.open.pop(AlertKey.of(t.alert), None)
            else:
                self.open[AlertKey.of(t.alert)] = t.alert
        self.log += transitions
        return transitions

    def scores(self, total: float, session: int) -> list[AlertTransition]:
        episode = EpisodeAlerts(self.state, dict(self.open))
        evaluation = episode.take(srs(total, session, self.client), rules=RULES, now=week(session, 1))
        self.state = episode.state
        return self._apply(evaluation.transitions)

    def attends(self, session: int, status: str = "attended", *, now: datetime | None = None,
                **changes: Any) -> list[AlertTransition]:
        state = appointment(self.client, session, status, **changes)
        self.appointments[state.appointment_id] = state
        return self.judge(now or week(session, 2))

    def judge(self, now: datetime) -> list[AlertTransition]:
        verdict = judge_attendance(self.state, list(self.appointments.values()), self.open.values(),
                                   episode=Episode("clinic-a", self.client, f"{self.client}-ep1"), rules=RULES, now=now)
        self.state = verdict.state
        return self._apply(verdict.transitions)


def test_a_client_whose_srs_falls_and_who_then_misses_two_sessions_has_one_escalated_rupture_alert() -> None:
    aroha = Clinic("aroha")
    for session, total in ((1, 38), (2, 38.5)):
        aroha.attends(session)
        aroha.scores(total, session)
    aroha.attends(3)
    [raised] = aroha.scores(31, 3)  # the SRS falls: an alliance rupture
    assert (raised.transition, raised.alert.kind) == ("raised", "alliance_rupture")

    [escalated] = aroha.attends(4, "no_show")  # a week after the drop: the combined signal
    assert escalated.transition == "escalated" and escalated.notify
    rupture = escalated.alert
    assert (rupture.alert_id, rupture.kind, rupture.severity, rupture.escalated) == \
        (raised.alert.alert_id, "alliance_rupture", "high", True)
    assert rupture.repair_prompt == RULE.combined_prompt
    attendance = rupture.evidence[-1]
    assert (attendance.rule_id, attendance.values["findings"], attendance.values["missed"]) == \
        ("disengagement", ["combined"], ["aroha-appt-4"])
    assert "within 14 days after the alliance dropped on 2026-02-16" in attendance.summary

    [again] = aroha.attends(5, "no_show")
    assert (again.transition, again.alert.alert_id, again.notify) == ("updated", rupture.alert_id, True)
    assert again.alert.evidence[-1].values["findings"] == ["combined", "consecutive"]
    assert [a.kind for a in aroha.open.values()] == ["alliance_rupture"]  # one alert for one situation
    assert not [t for t in aroha.log if t.alert.kind == "disengagement"]


def test_the_rupture_counts_as_repaired_only_once_the_client_attends_again_and_the_alliance_is_back() -> None:
    aroha = Clinic("aroha")
    for session, total in ((1, 38), (2, 38.5)):
        aroha.attends(session)
        aroha.scores(total, session)
    aroha.attends(3)
    aroha.scores(31, 3)
    aroha.attends(4, "no_show")
    aroha.attends(5, "no_show")
    [held] = aroha.scores(38, 6)  # the alliance is back, but the session's attendance is not in yet
    assert held.transition == "updated" and held.alert.status == "open"
    assert held.reason is not None and "once the client attends again" in held.reason
    [repaired] = aroha.attends(6)
    assert (repaired.transition, repaired.alert.resolution) == ("resolved", "repaired")
    assert not aroha.open


def test_attending_again_with_the_alliance_still_low_keeps_the_rupture_open_until_the_score_is_back() -> None:
    ben = Clinic("ben")
    for session, total in ((1, 38), (2, 38.5)):
        ben.attends(session)
        ben.scores(total, session)
    ben.attends(3)
    ben.scores(31, 3)
    ben.attends(4, "no_show")
    assert ben.attends(5) == []  # back, but the alliance has not been measured since
    assert [a.kind for a in ben.open.values()] == ["alliance_rupture"]
    [repaired] = ben.scores(38, 5)
    assert (repaired.transition, repaired.alert.resolution) == ("resolved", "repaired")


def test_a_client_who_cancels_late_for_a_documented_reason_with_a_good_alliance_is_not_flagged() -> None:
    cara = Clinic("cara")
    for session, total in ((1, 38), (2, 39), (3, 38.5)):
        cara.attends(session)
        cara.scores(total, session)
    # the evening before, transport fell through (pat-lt): late, by the client, with a reason
    assert cara.attends(4, "cancelled", cancelled_at=week(4, -14), cancelled_by="client",
                        cancellation_reason="pat-lt") == []
    assert cara.attends(5) == []
    assert cara.scores(38, 5) == []
    assert not cara.log
    summary = cara.state.attendance if cara.state else None
    assert summary is not None and (summary.attended, summary.cancelled, summary.late_cancellations) == (4, 1, 1)


def test_two_missed_sessions_in_a_row_raise_a_disengagement_alert_that_closes_when_the_client_comes_back() -> None:
    dev = Clinic("dev")
    dev.attends(1)
    assert dev.attends(2, "no_show") == []  # one missed session alone is not a pattern
    # an early cancellation by the clinic neither counts nor breaks the run
    assert dev.attends(3, "cancelled", cancelled_at=week(3, -72), cancelled_by="clinic",
                       cancellation_reason="prov-pers") == []
    [raised] = dev.attends(4, "cancelled", cancelled_at=week(4, -2), cancelled_by="unknown")
    alert = raised.alert
    assert (raised.transition, alert.kind, alert.severity, alert.instrument, raised.notify) == \
        ("raised", "disengagement", "medium", "attendance", True)
    assert alert.repair_prompt == RULE.prompt
    assert "without blame" in RULE.prompt and "how the work together is going" in RULE.prompt
    evidence = alert.evidence[0]
    assert evidence.values["missed"] == ["dev-appt-2", "dev-appt-4"]
    assert "no-show 2026-02-09, late cancellation 2026-02-23" in evidence.summary
    assert evidence.sources == ["SWIFT2012", "SHARF2010"]
    [closed] = dev.attends(5)
    assert (closed.transition, closed.alert.resolution) == ("resolved", "attending_again")


def test_no_attended_session_for_four_weeks_while_sessions_are_expected_raises_disengagement() -> None:
    eli = Clinic("eli")
    eli.attends(1)
    eli.attends(6, "booked", now=week(1, 2))  # booked ahead: sessions are expected
    assert eli.judge(week(4)) == []  # 21 days: not yet
    [raised] = eli.judge(week(5))  # 28 days without an attended session
    assert raised.alert.kind == "disengagement" and raised.alert.evidence[0].values["findings"] == ["gap"]
    assert "no attended session for 28 days" in raised.alert.evidence[0].summary
    assert eli.judge(week(5, 3)) == []  # the same finding again is no new evidence


def test_a_booked_session_that_passed_with_no_outcome_sent_still_means_sessions_were_expected() -> None:
    ida = Clinic("ida")
    ida.attends(1)
    ida.attends(2, "booked", now=week(1, 2))
    [raised] = ida.judge(week(5))
    assert raised.alert.evidence[0].values["findings"] == ["gap"]
    assert ida.state is not None and ida.state.attendance is not None
    assert ida.state.attendance.unrecorded_since_attended == 1


def test_no_gap_alert_when_nothing_more_is_expected() -> None:
    fay = Clinic("fay")
    fay.attends(1)
    fay.attends(2)
    assert fay.judge(week(12)) == []  # the last session was attended and nothing is booked: perhaps an ending


def test_a_missed_session_soon_after_a_falling_alliance_without_an_open_rupture_is_the_combined_signal() -> None:
    gus = Clinic("gus")
    for session, total in ((1, 39), (2, 38), (3, 39), (4, 38.4)):
        gus.attends(session)
        gus.scores(total, session)  # 38.4: below his own mean, not a rupture
    assert not gus.open
    [raised] = gus.attends(5, "no_show")
    assert (raised.alert.kind, raised.alert.severity) == ("disengagement", "high")
    assert raised.alert.repair_prompt == RULE.combined_prompt


def test_a_deceased_clients_cancellations_are_never_counted() -> None:
    hana = Clinic("hana")
    hana.attends(1)
    hana.attends(2, "no_show")
    assert hana.attends(3, "cancelled", cancelled_at=week(3, -1), cancelled_by="client",
                        cancellation_reason="pat-dec") == []


def test_the_same_record_in_any_order_or_judged_twice_gives_the_same_summary_and_no_new_transitions() -> None:
    appointments = [appointment("ivy", 1, "attended"), appointment("ivy", 2, "no_show"),
                    appointment("ivy", 3, "cancelled", cancelled_at=week(3, -3), cancelled_by="client"),
                    appointment("ivy", 4, "void"), appointment("ivy", 5, "booked")]
    now = week(4)
    summaries = {summarise(order, now, RULE).model_dump_json() for order in itertools.permutations(appointments)}
    assert len(summaries) == 1
    ivy = Clinic("ivy", appointments={a.appointment_id: a for a in appointments})
    [raised] = ivy.judge(now)
    assert raised.alert.evidence[0].values["missed"] == ["ivy-appt-2", "ivy-appt-3"]
    assert ivy.judge(now) == []  # a redelivery or another replica finds nothing new


def test_an_amended_no_show_that_was_entered_in_error_supersedes_the_alert() -> None:
    jo = Clinic("jo")
    jo.attends(1)
    jo.attends(2, "no_show")
    [raised] = jo.attends(3, "no_show")
    [closed] = jo.attends(3, "void")
    assert (closed.alert.alert_id, closed.alert.resolution) == (raised.alert.alert_id, "superseded")


def test_a_rupture_opening_while_a_disengagement_alert_is_open_takes_it_over() -> None:
    kai = Clinic("kai")
    for session, total in ((1, 38), (2, 38.5)):
        kai.attends(session)
        kai.scores(total, session)
    kai.attends(3, "no_show")
    kai.attends(4, "no_show")
    assert [a.kind for a in kai.open.values()] == ["disengagement"]
    kai.scores(31, 5)  # measured by phone, say: the alliance has dropped
    changes = kai.attends(6, "no_show")
    assert sorted((t.alert.kind, t.transition) for t in changes) == [
        ("alliance_rupture", "escalated"), ("disengagement", "resolved")]
    assert [a.kind for a in kai.open.values()] == ["alliance_rupture"]


def test_a_late_score_replaying_the_episode_keeps_the_attendance_evidence_and_the_escalation() -> None:
    lea = Clinic("lea")
    history = []
    for session, total in ((1, 38), (2, 38.5), (3, 31)):
        lea.attends(session)
        lea.scores(total, session)
        history.append(srs(total, session, "lea"))
    lea.attends(4, "no_show")
    [rupture] = lea.open.values()
    stored = [rupture]
    assert lea.state is not None
    episode, found = EpisodeAlerts.replay([*history, srs(38, 0, "lea")], stored, rules=RULES, now=week(5),
                                          attendance=lea.state.attendance)
    assert episode.state is not None and episode.state.attendance == lea.state.attendance
    after = {t.alert.alert_id: t.alert for t in found}.get(rupture.alert_id, rupture)
    assert after.status != "resolved" and after.escalated
    assert [e.rule_id for e in after.evidence].count("disengagement") == 1


def attendance_policy(**values: float) -> ClinicalPolicy:
    """Clinic A's clinical policy v1 with its own attendance thresholds, signed off by its lead."""
    return ClinicalPolicy(tenant="clinic-a", version=1, signed_off_by="Dr Lead (synthetic)", signed_off_at=T0,
                          values=PolicyValues(rules={"disengagement": dict(values)}))


def test_a_tenants_own_lateness_threshold_replaces_the_24_hour_default() -> None:
    cancelled = appointment("lou", 2, "cancelled", cancelled_at=week(2, -30), cancelled_by="client")
    assert summarise([cancelled], week(3), RULE).late_cancellations == 0  # 30 h ahead: not late by default
    strict = applied(RULES, attendance_policy(late_cancellation_hours=48, consecutive_missed=1))
    assert strict.disengagement.parameters.late_cancellation_hours.note.startswith("the tenant's own value")
    assert strict.disengagement.parameters.late_cancellation_hours.confidence == "tenant"
    lou = Clinic("lou")
    lou.attends(1)
    lou.appointments[cancelled.appointment_id] = cancelled
    verdict = judge_attendance(lou.state, list(lou.appointments.values()), [],
                               episode=Episode("clinic-a", "lou", "lou-ep1"), rules=strict, now=week(3))
    [raised] = verdict.transitions
    assert raised.alert.evidence[0].values["late_cancellation_hours"] == 48
    assert raised.alert.policy_version == 1 and raised.alert.evidence[0].policy_version == 1
    assert RULES.disengagement.parameters.late_cancellation_hours.value == 24  # the defaults are untouched


def test_a_policy_naming_an_unknown_value_or_a_bad_number_is_refused() -> None:
    for values, where in (({"late_hours": 48.0}, "rules.disengagement.late_hours"),
                          ({"gap_days": 0.0}, "rules.disengagement.gap_days"),
                          ({"consecutive_missed": 1.5}, "rules.disengagement.consecutive_missed")):
        [problem] = check(PolicyValues(rules={"disengagement": values}), load_registry())
        assert problem.where == where


def test_the_old_attendance_setting_stops_the_service_rather_than_being_ignored() -> None:
    with pytest.raises(ValueError, match="RAPPORT_ATTENDANCE_POLICY is no longer read"):
        Settings(attendance_policy="acme:late_cancellation_hours=48")
    assert Settings(attendance_policy="").attendance_policy == ""


def test_the_therapist_reads_the_missed_sessions_and_the_prompt_not_a_score() -> None:
    from rapport.services.alerts.rules import notification_for

    dev = Clinic("dev")
    dev.attends(1)
    dev.attends(2, "no_show")
    [raised] = dev.attends(3, "no_show")
    note = notification_for(raised)
    assert note is not None
    assert note.headline == ("Disengagement: 2 missed sessions since the last attended "
                             "(no-show 2026-02-09, no-show 2026-02-16)")
    assert note.evidence.startswith("Missed in a row: 2; last attended session: 2026-02-02.")
    assert "Rule disengagement v1 (SWIFT2012, SHARF2010)" in note.evidence
    assert note.prompt == RULE.prompt


def ending(client: str, kind: str, session: int) -> Any:
    from rapport.shared.contracts.attendance import EpisodeEnding

    return EpisodeEnding(tenant="clinic-a", client_id=client, episode_id=f"{client}-ep1", ending=kind,
                         ended_at=week(session, 1), recorded_at=week(session, 2))


def test_a_client_whose_episode_ends_as_planned_is_no_longer_followed() -> None:
    max_ = Clinic("max")
    for session in (1, 2, 3):
        max_.attends(session)
    verdict = judge_attendance(max_.state, list(max_.appointments.values()), [], episode=Episode(
        "clinic-a", "max", "max-ep1"), rules=RULES, now=week(3, 3), ending=(ending("max", "planned", 3), 1))
    assert verdict.transitions == []
    assert (verdict.summary.ending, verdict.summary.ending_recorded, verdict.summary.ended_at) == \
        ("planned", True, week(3, 1))
    max_.state = verdict.state
    max_.attends(4, "no_show")  # a stray booking after the agreed ending
    assert max_.judge(week(12)) == []  # ended: no gap, no missed-session alert
    assert max_.state is not None and max_.state.attendance is not None
    assert max_.state.attendance.ending == "planned"  # kept across later judgements


def test_a_recorded_ending_resolves_an_open_disengagement_alert_and_an_older_one_does_not_replace_it() -> None:
    ned = Clinic("ned")
    ned.attends(1)
    ned.attends(2, "no_show")
    [raised] = ned.attends(3, "no_show")
    episode = Episode("clinic-a", "ned", "ned-ep1")
    verdict = judge_attendance(ned.state, list(ned.appointments.values()), ned.open.values(), episode=episode,
                               rules=RULES, now=week(4), ending=(ending("ned", "unplanned", 3), 2))
    [closed] = verdict.transitions
    assert (closed.alert.alert_id, closed.alert.resolution) == (raised.alert.alert_id, "episode_ended")
    older = judge_attendance(verdict.state, list(ned.appointments.values()), [], episode=episode, rules=RULES,
                             now=week(4), ending=(ending("ned", "planned", 3), 1))
    assert older.summary.ending == "unplanned"


def test_without_a_recorded_ending_a_client_who_stopped_coming_has_ended_unplanned() -> None:
    oli = Clinic("oli")
    oli.attends(1)
    oli.attends(2, "no_show")
    assert oli.state is not None and oli.state.attendance is not None and oli.state.attendance.ending == "open"
    oli.judge(week(10))  # 63 days after the last attended session, a missed one since, nothing booked
    assert oli.state.attendance is not None
    assert (oli.state.attendance.ending, oli.state.attendance.ending_recorded, oli.state.attendance.ended_at) == \
        ("unplanned", False, week(1))


# --- every attendance threshold on each side (issue 13, tests that pin the thresholds) ---------------


@pytest.mark.parametrize(("hours_ahead", "late"), [(24, False), (23.99, True), (24.01, False)])
def test_a_cancellation_is_late_only_when_less_than_24_hours_before_the_start(hours_ahead: float,
                                                                               late: bool) -> None:
    """Mo (synthetic) cancels session 2: exactly 24 hours ahead is not late (the rule says less than), 23.99
    hours ahead is, 24.01 is not."""
    cancelled = appointment("mo", 2, "cancelled", cancelled_at=week(2, -hours_ahead), cancelled_by="client")
    assert summarise([cancelled], week(3), RULE).late_cancellations == (1 if late else 0)


@pytest.mark.parametrize(("days", "ending"), [(56, "unplanned"), (55.99, "open")])
def test_an_episode_counts_as_ended_unplanned_from_exactly_56_days_without_attendance(days: float,
                                                                                     ending: str) -> None:
    """Oli (synthetic) attended session 1, missed session 2 and has nothing booked: 56 days after the last
    attended session the episode counts as ended unplanned; 55.99 days after, it is still open."""
    oli = Clinic("oli")
    oli.attends(1)
    oli.attends(2, "no_show")
    oli.judge(week(1) + timedelta(days=days))
    assert oli.state is not None and oli.state.attendance is not None and oli.state.attendance.ending == ending


@pytest.mark.parametrize(("after_drop", "combined"), [(timedelta(days=14), True),
                                                      (timedelta(days=14, minutes=1), False)])
def test_a_missed_session_is_the_combined_signal_up_to_exactly_14_days_after_the_drop(after_drop: timedelta,
                                                                                     combined: bool) -> None:
    """Gus (synthetic) dips below his own mean at session 4 (SRS 38.4, not a rupture). A no-show exactly 14 days
    after that session is the combined signal (high); a minute later it is a single missed session and, alone,
    raises nothing."""
    gus = Clinic("gus")
    for session, total in ((1, 39), (2, 38), (3, 39), (4, 38.4)):
        gus.attends(session)
        gus.scores(total, session)
    missed = Attendance(tenant="clinic-a", appointment_id="gus-appt-x", client_id="gus", episode_id="gus-ep1",
                        clinician_id="clin-07", status="no_show", start=week(4, 0.9) + after_drop,
                        recorded_at=week(4, 0.9) + after_drop + timedelta(hours=1))
    gus.appointments[missed.appointment_id] = missed
    found = gus.judge(week(4, 0.9) + after_drop + timedelta(hours=2))
    assert [(t.alert.kind, t.alert.severity) for t in found] == ([("disengagement", "high")] if combined else [])
