"""Disengagement: attendance read on its own and together with the alliance (rules.toml [disengagement]).

    summarise(appointments, now, rule) -> AttendanceSummary
    judge_attendance(state, appointments, open alerts, ...) -> AttendanceVerdict(state, transitions)

Pure: the episode's appointments (the latest state of each, any order) and its state in, the episode's
attendance summary and the alert transitions out; time comes in as `now`. The findings are derived from
the whole record each time, never from the one event that arrived, so a redelivery, an out-of-order
state or a replica evaluating the same episode finds the same thing, and evidence already on an alert is
not added again.

Findings, over the sessions missed since the last attended one (a no-show, or a late cancellation by
the client or by someone unknown):
- combined: one of them within `window_days` after the alliance drop (the opening session of an open
  alliance_rupture alert; without one, the latest score when an alliance total is below the client's
  own mean);
- consecutive: `consecutive_missed` of them;
- gap: no attended session for `gap_days` while sessions are still expected (one booked ahead, or
  missed, cancelled or booked-and-passed-without-an-outcome since the last attended).
With an alliance_rupture alert open, the findings escalate it (one alert per clinical situation): the
attendance is its new evidence, severity high, escalated, the combined prompt; an open disengagement
alert is then superseded by it. Otherwise they raise or update the disengagement alert (severity
combined > consecutive, gap). With no finding left, a disengagement alert resolves as attending_again
once the client has attended since the missed sessions (superseded when its evidence vanished
otherwise), and a rupture escalated by attendance resolves as repaired once the client attends again
and a score had already brought the alliance back (the engine held that repair, Rupture.repair_held).

Endings told apart (the summary's `ending`): planned or unplanned as the clinic recorded it (an
EpisodeOfCare finished or cancelled, or the native ending; the newest revision stands); without one,
unplanned once no session has been attended for `unplanned_after_days` after missed or cancelled
sessions with nothing booked ahead; else open. A recorded ending closes the episode: no further
findings, and an open disengagement alert resolves as episode_ended.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from rapport.services.alerts.rules.conditions import SEVERITY_ORDER, worst
from rapport.services.alerts.rules.engine import falling_alliance
from rapport.services.alerts.rules.lifecycle import EVIDENCE_KEPT, Changes, alert_id, resolved
from rapport.services.alerts.rules.ruleset import Disengagement, RuleSet
from rapport.services.alerts.rules.state import NO_SCORE_YET, AlertKey, EpisodeState
from rapport.shared.contracts.alert import Alert, AlertTransition, Evidence, Resolution, Severity
from rapport.shared.contracts.attendance import Attendance, AttendanceSummary, EpisodeEnding, MissedSession

RULE_ID = "disengagement"
INSTRUMENT = "attendance"  # the alert's 'instrument': what it reads
KEY = AlertKey("disengagement", INSTRUMENT, None)
LISTED = 10  # missed sessions listed in a summary: its size does not grow with the episode
Finding = Literal["combined", "consecutive", "gap"]


def missed_kind(appointment: Attendance, rule: Disengagement) -> Literal["no_show", "late_cancellation"] | None:
    """Whether an appointment is a missed session by the rule's policy."""
    if appointment.status == "no_show":
        return "no_show"
    if appointment.status == "cancelled" and is_late(appointment, rule) \
            and appointment.cancelled_by in rule.parameters.counted_cancellers.value \
            and appointment.cancellation_reason not in rule.parameters.never_counted_reasons.value:
        return "late_cancellation"
    return None


def is_late(appointment: Attendance, rule: Disengagement) -> bool:
    """Cancelled less than late_cancellation_hours before the start (or after it); unknown times never are."""
    if appointment.start is None or appointment.cancelled_at is None:
        return False
    return appointment.start - appointment.cancelled_at < timedelta(hours=rule.parameters.late_cancellation_hours.value)


def summarise(appointments: Iterable[Attendance], now: datetime, rule: Disengagement) -> AttendanceSummary:
    counted = [a for a in appointments if a.status != "void"]
    past = sorted((a for a in counted if a.start is not None and a.start <= now),
                  key=lambda a: (a.start, a.appointment_id))
    attended = [a for a in past if a.status == "attended"]
    last_attended = attended[-1].start if attended else None
    missed: list[MissedSession] = []
    cancelled_since = unrecorded = 0
    for appointment in reversed(past):
        if appointment.status == "attended":
            break
        kind = missed_kind(appointment, rule)
        if kind is not None:
            assert appointment.start is not None
            missed.append(MissedSession(appointment_id=appointment.appointment_id, start=appointment.start, kind=kind))
        elif appointment.status == "cancelled":
            cancelled_since += 1
        elif appointment.status == "booked":
            unrecorded += 1
    booked_ahead = [a.start for a in counted if a.status == "booked" and a.start is not None and a.start > now]
    return AttendanceSummary(
        as_of=now, attended=len(attended), no_shows=sum(a.status == "no_show" for a in counted),
        cancelled=sum(a.status == "cancelled" for a in counted),
        late_cancellations=sum(a.status == "cancelled" and is_late(a, rule) for a in counted),
        last_attended_at=last_attended,
        days_since_attended=round((now - last_attended).total_seconds() / 86400, 2) if last_attended else None,
        missed_in_a_row=len(missed), missed_since_attended=sorted(missed, key=lambda m: m.start)[-LISTED:],
        cancelled_since_attended=cancelled_since, unrecorded_since_attended=unrecorded,
        next_booked_at=min(booked_ahead, default=None),
    )


@dataclass(frozen=True)
class AttendanceVerdict:
    state: EpisodeState
    transitions: list[AlertTransition]
    summary: AttendanceSummary


@dataclass(frozen=True)
class Episode:
    tenant: str
    client_id: str
    episode_id: str


def judge_attendance(state: EpisodeState | None, appointments: Sequence[Attendance], open_alerts: Iterable[Alert],
                     *, episode: Episode, rules: RuleSet, now: datetime,
                     ending: tuple[EpisodeEnding, int] | None = None) -> AttendanceVerdict:
    """`ending`: an ending of this episode just accepted, with its revision (it replaces a recorded one of
    an earlier revision)."""
    rule = rules.disengagement
    before = state or EpisodeState(latest_at=NO_SCORE_YET)
    summary = _with_ending(summarise(appointments, now, rule), before.attendance, ending, rule)
    open_now = {AlertKey.of(a): a for a in open_alerts if a.status != "resolved"}
    rupture_key = min((k for k in open_now if k.kind == "alliance_rupture"),
                      key=lambda k: (k.subscale is not None, k.instrument, k.subscale or ""), default=None)
    rupture = open_now.get(rupture_key) if rupture_key is not None else None
    drop_at = _alliance_drop(before, rupture, rules)
    # an episode whose ending the clinic recorded is no longer followed
    found: list[Finding] = [] if summary.ending_recorded else _findings(summary, drop_at, rule)
    clinician = next((a.clinician_id for a in sorted(appointments, key=_latest_first) if a.clinician_id), None)
    changes = Changes(now, rules.policy.version)
    ruptures = dict(before.ruptures)
    engaged = open_now.get(KEY)
    if found:
        evidence = _evidence(summary, found, drop_at, rule, now).model_copy(
            update={"policy_version": rules.policy.version})
        if rupture is not None and rupture_key is not None:
            _escalate(rupture, evidence, rule, changes)
            if engaged is not None:
                changes.record(engaged, resolved(engaged, "superseded", "followed on the open alliance rupture alert"),
                               "resolved", reason="followed as evidence on the open alliance rupture alert")
        elif engaged is not None:
            _update(engaged, evidence, _severity(found, rule), rule, changes, clinician)
        else:
            trigger = summary.missed_since_attended[-1].appointment_id if summary.missed_since_attended \
                else f"gap:{summary.last_attended_at.isoformat() if summary.last_attended_at else ''}"
            raised = Alert(
                alert_id=alert_id(episode.tenant, episode.client_id, episode.episode_id, KEY, trigger),
                tenant=episode.tenant, kind="disengagement", severity=_severity(found, rule), status="open",
                client_id=episode.client_id, episode_id=episode.episode_id, clinician_id=clinician,
                instrument=INSTRUMENT, opened_at=now, updated_at=now, evidence=[evidence],
                repair_prompt=rule.combined_prompt if "combined" in found else rule.prompt, version=1,
            )
            changes.record(None, raised, "raised", notify=True)
    else:
        attending = summary.attended > 0 and summary.missed_in_a_row == 0
        if engaged is not None:
            resolution: Resolution = "episode_ended" if summary.ending_recorded \
                else "attending_again" if attending else "superseded"
            why = (f"the episode ended ({summary.ending}, as the clinic recorded)" if summary.ending_recorded
                   else "the client attended again" if attending else "its evidence changed (an amended appointment)")
            changes.record(engaged, resolved(engaged, resolution, why), "resolved", reason=why)
        if rupture is not None and rupture_key is not None and attending and _escalated_by_attendance(rupture):
            held = ruptures.get(rupture_key.series)
            if held is not None and held.repair_held:
                why = "the alliance is back and the client attended again"
                changes.record(rupture, resolved(rupture, "repaired", why), "resolved", reason=why)
                ruptures.pop(rupture_key.series)
    after = before.model_copy(update={"attendance": summary, "ruptures": ruptures})
    return AttendanceVerdict(after, changes.transitions(), summary)


def _with_ending(summary: AttendanceSummary, earlier: AttendanceSummary | None,
                 ending: tuple[EpisodeEnding, int] | None, rule: Disengagement) -> AttendanceSummary:
    """The episode's ending: the one the clinic recorded (the newest revision), else unplanned when the
    client stopped coming (no attended session for unplanned_after_days after missed or cancelled
    sessions, nothing booked ahead), else open."""
    recorded = (earlier.ending, earlier.ended_at, earlier.ending_revision) \
        if earlier is not None and earlier.ending_recorded else None
    if ending is not None and (recorded is None or (recorded[2] or 0) <= ending[1]):
        recorded = (ending[0].ending, ending[0].ended_at, ending[1])
    if recorded is not None:
        kind, ended_at, revision = recorded
        return summary.model_copy(update={"ending": kind, "ended_at": ended_at, "ending_revision": revision,
                                          "ending_recorded": True})
    stopped = summary.days_since_attended is not None \
        and summary.days_since_attended >= rule.parameters.unplanned_after_days.value \
        and (summary.missed_in_a_row > 0 or summary.cancelled_since_attended > 0) and summary.next_booked_at is None
    if stopped:
        return summary.model_copy(update={"ending": "unplanned", "ended_at": summary.last_attended_at})
    return summary


def _latest_first(appointment: Attendance) -> tuple[float, str]:
    start = appointment.start.timestamp() if appointment.start is not None else float("-inf")
    return -start, appointment.appointment_id


def _alliance_drop(state: EpisodeState, rupture: Alert | None, rules: RuleSet) -> datetime | None:
    """When the alliance dropped: the open rupture's opening session, else the latest score while an
    alliance total is below the client's own mean."""
    if rupture is not None and rupture.evidence:
        return rupture.evidence[0].administered_at
    if state.latest_at != NO_SCORE_YET and falling_alliance(state, rules):
        return state.latest_at
    return None


def _findings(summary: AttendanceSummary, drop_at: datetime | None, rule: Disengagement) -> list[Finding]:
    p = rule.parameters
    found: list[Finding] = []
    window = timedelta(days=p.window_days.value)
    if drop_at is not None and any(drop_at <= m.start <= drop_at + window for m in summary.missed_since_attended):
        found.append("combined")
    if summary.missed_in_a_row >= p.consecutive_missed.value:
        found.append("consecutive")
    expected = summary.next_booked_at is not None or summary.missed_in_a_row > 0 \
        or summary.cancelled_since_attended > 0 or summary.unrecorded_since_attended > 0
    if summary.days_since_attended is not None and summary.days_since_attended >= p.gap_days.value and expected:
        found.append("gap")
    return found


def _severity(found: Sequence[Finding], rule: Disengagement) -> Severity:
    return worst(*(getattr(rule.severity, f) for f in found))


def _evidence(summary: AttendanceSummary, found: Sequence[Finding], drop_at: datetime | None, rule: Disengagement,
              now: datetime) -> Evidence:
    missed = summary.missed_since_attended
    words = {"no_show": "no-show", "late_cancellation": "late cancellation"}
    listed = ", ".join(f"{words[m.kind]} {m.start.date().isoformat()}" for m in missed)
    parts: list[str] = []
    if summary.missed_in_a_row:
        parts.append(f"{summary.missed_in_a_row} missed session{'s' if summary.missed_in_a_row > 1 else ''} "
                     f"since the last attended" + (f" ({listed})" if listed else ""))
    if "combined" in found and drop_at is not None:
        parts.append(f"within {rule.parameters.window_days.value:g} days after the alliance dropped on "
                     f"{drop_at.date().isoformat()}")
    if "gap" in found and summary.days_since_attended is not None:
        parts.append(f"no attended session for {int(summary.days_since_attended)} days")
    trigger = missed[-1] if missed else None
    values: dict[str, object] = {
        "findings": list(found), "missed": [m.appointment_id for m in missed],
        "missed_in_a_row": summary.missed_in_a_row, "days_since_attended": summary.days_since_attended,
        "last_attended_at": summary.last_attended_at.isoformat() if summary.last_attended_at else None,
        "alliance_drop_at": drop_at.isoformat() if drop_at else None,
        "window_days": rule.parameters.window_days.value,
        "consecutive_missed": rule.parameters.consecutive_missed.value,
        "gap_days": rule.parameters.gap_days.value,
        "late_cancellation_hours": rule.parameters.late_cancellation_hours.value, "rule_confidence": rule.confidence,
        "instrument_name": "Attendance",
    }
    return Evidence(
        rule_id=RULE_ID, rule_version=rule.version, summary="Disengagement: " + ", ".join(parts),
        submission_id=trigger.appointment_id if trigger else "attendance",
        administered_at=trigger.start if trigger else now, instrument=INSTRUMENT,
        score=float(summary.missed_in_a_row), values={k: v for k, v in values.items() if v is not None},
        sources=list(rule.source),
    )


def _signature(evidence: Evidence) -> tuple[object, ...]:
    """What makes attendance evidence new: which findings, which missed sessions, whether the gap holds."""
    v = evidence.values
    return tuple(v.get("findings", ())), tuple(v.get("missed", ())), v.get("last_attended_at")


def _missed(evidence: Evidence) -> int:
    count = evidence.values.get("missed_in_a_row", 0)
    return count if isinstance(count, int) else 0


def _latest_attendance(alert: Alert) -> Evidence | None:
    return next((e for e in reversed(alert.evidence) if e.rule_id == RULE_ID), None)


def _escalated_by_attendance(alert: Alert) -> bool:
    return _latest_attendance(alert) is not None


def _escalate(rupture: Alert, evidence: Evidence, rule: Disengagement, changes: Changes) -> None:
    latest = _latest_attendance(rupture)
    if latest is not None and _signature(latest) == _signature(evidence):
        return
    first = latest is None
    after = rupture.model_copy(update={
        "evidence": [*rupture.evidence, evidence][-EVIDENCE_KEPT:],
        "severity": worst(rupture.severity, rule.severity.combined), "escalated": True, "status": "open",
        "repair_prompt": rule.combined_prompt,
    })
    more = latest is None or _missed(evidence) > _missed(latest)
    changes.record(rupture, after, "escalated" if first or not rupture.escalated else "updated", notify=first or more,
                   reason="sessions missed after the alliance dropped" if first else "another missed session")


def _update(alert: Alert, evidence: Evidence, severity: Severity, rule: Disengagement, changes: Changes,
            clinician: str | None) -> None:
    latest = _latest_attendance(alert)
    if latest is not None and _signature(latest) == _signature(evidence):
        return
    combined = "combined" in evidence.values.get("findings", [])
    after = alert.model_copy(update={
        "evidence": [*alert.evidence, evidence][-EVIDENCE_KEPT:], "severity": worst(alert.severity, severity),
        "repair_prompt": rule.combined_prompt if combined else alert.repair_prompt,
        "clinician_id": clinician or alert.clinician_id,
    })
    worse = SEVERITY_ORDER.index(after.severity) > SEVERITY_ORDER.index(alert.severity)
    more = latest is None or _missed(evidence) > _missed(latest)
    changes.record(alert, after, "updated", notify=worse or more,
                   reason=f"severity raised from {alert.severity} to {after.severity}" if worse else None)
