"""Figures for the disengagement rule on a seeded synthetic cohort (issue 15 item 5), in process: the
pure engine and attendance rule, no broker, no database. `python -m rapport.attendance_evaluation`.

The cohort takes two facts from the literature and nothing from the rules:
- the base rate of dropout, 19.7% (Swift & Greenberg 2012, weighted over 669 studies);
- that clients who drop out had a weaker alliance, d = .55 (Sharf, Primavera & Diener 2010): their
  SRS is drawn 0.55 between-client SDs lower.
Everything else is a marked assumption of this simulation, not a clinical fact (ASSUMED below): the
SRS spread, isolated misses among clients who stay, when dropouts stop coming and how many booked
sessions they miss before the clinic stops booking. Figures on a synthetic cohort say whether the rule
does what it says; they are not evidence that it works in a clinic.

Ground truth: a dropout is a client who stops attending before the planned end. Counted as an alert:
a disengagement alert raised, or an alliance rupture alert escalated by attendance (the combined
signal). Precision and recall are per client; lead time is the days from the client's last attended
session to their first alert (an attendance rule can only speak after sessions are missed: positive
numbers are days *after* it); alerts per 100 attended sessions counts every such alert.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from rapport.services.alerts.rules import AlertKey, EpisodeAlerts, EpisodeState, RuleSet, load_ruleset
from rapport.services.alerts.rules.attendance import Episode, judge_attendance
from rapport.shared.contracts.alert import Alert, AlertTransition
from rapport.shared.contracts.attendance import Attendance
from rapport.shared.contracts.score import ScoreComputed, Scored

DROPOUT_RATE = 0.197  # Swift & Greenberg 2012
ALLIANCE_D = 0.55  # Sharf, Primavera & Diener 2010


@dataclass(frozen=True)
class Assumed:
    """This simulation's assumptions: not clinical facts."""

    planned_sessions: int = 12
    srs_between_client_mean: float = 37.0
    srs_between_client_sd: float = 2.0
    srs_within_client_sd: float = 1.0
    isolated_miss_rate: float = 0.08  # per session, among clients who stay: a no-show or late cancellation
    early_cancellation_rate: float = 0.05
    dropout_after_sessions: tuple[int, int] = (2, 9)  # the last attended session of a dropout, uniform
    missed_before_booking_stops: tuple[int, int] = (1, 3)  # booked sessions a dropout misses after it


ASSUMED = Assumed()
T0 = datetime(2026, 1, 5, 10, tzinfo=UTC)
TENANT = "evaluation"


@dataclass
class Figures:
    clients: int
    dropouts: int
    attended_sessions: int
    alerted_clients: int
    true_positives: int
    precision: float | None
    recall: float | None
    lead_days_median: float | None
    alerts_per_100_sessions: float
    false_alerts_by_finding: dict[str, int]  # the findings of the first alert of each client who stayed
    seed: int


def _srs(client: str, session: int, total: float, at: datetime) -> ScoreComputed:
    total = round(min(40.0, max(0.0, total)), 1)
    scored = Scored(instrument="srs", instrument_version="3", kind="alliance", better="higher", total=total,
                    total_min=0, total_max=40, risk_checked=True)
    return ScoreComputed(tenant=TENANT, submission_id=f"{client}-srs-{session}", revision=1, client_id=client,
                         episode_id=f"{client}-ep1", administered_at=at + timedelta(minutes=50),
                         session_number=session, score=scored, responses=dict(enumerate((total / 4,) * 4, start=1)),
                         parameters={"concern_cutoff": 36})


def _counted(transition: AlertTransition) -> bool:
    alert = transition.alert
    if alert.kind == "disengagement":
        return transition.transition == "raised"
    attendance = [e for e in alert.evidence if e.rule_id == "disengagement"]
    return alert.kind == "alliance_rupture" and len(attendance) == 1 and attendance[0] is alert.evidence[-1] \
        and transition.transition in ("escalated", "updated")


def simulate_client(n: int, rng: random.Random, rules: RuleSet) -> tuple[bool, int, datetime | None,
                                                                         list[tuple[datetime, str]]]:
    """(dropped out, attended sessions, last attended, times of counted alerts) for one client."""
    client = f"client-{n:04d}"
    dropout = rng.random() < DROPOUT_RATE
    sd = ASSUMED.srs_between_client_sd
    own_mean = rng.gauss(ASSUMED.srs_between_client_mean - (ALLIANCE_D * sd if dropout else 0.0), sd)
    low, high = ASSUMED.dropout_after_sessions
    last = rng.randint(low, high) if dropout else ASSUMED.planned_sessions
    missed_after = rng.randint(*ASSUMED.missed_before_booking_stops) if dropout else 0
    state: EpisodeState | None = None
    open_alerts: dict[AlertKey, Alert] = {}
    appointments: dict[str, Attendance] = {}
    alerts: list[tuple[datetime, str]] = []
    attended = 0
    last_attended: datetime | None = None
    episode = Episode(TENANT, client, f"{client}-ep1")

    def apply(transitions: list[AlertTransition], at: datetime) -> None:
        for t in transitions:
            if _counted(t):
                findings = t.alert.evidence[-1].values.get("findings", [])
                alerts.append((at, "+".join(findings) if isinstance(findings, list) else "?"))
            if t.alert.status == "resolved":
                open_alerts.pop(AlertKey.of(t.alert), None)
            else:
                open_alerts[AlertKey.of(t.alert)] = t.alert

    for session in range(1, last + missed_after + 1):
        start = T0 + timedelta(days=7 * (session - 1))
        now = start + timedelta(hours=2)
        if session <= last:
            roll = rng.random()
            if session > 1 and roll < ASSUMED.isolated_miss_rate and not dropout:
                status, extra = ("no_show", {}) if rng.random() < 0.5 else (
                    "cancelled", {"cancelled_at": start - timedelta(hours=3), "cancelled_by": "client"})
            elif session > 1 and roll < ASSUMED.isolated_miss_rate + ASSUMED.early_cancellation_rate:
                status, extra = "cancelled", {"cancelled_at": start - timedelta(days=3), "cancelled_by": "client"}
            else:
                status, extra = "attended", {}
        else:
            status, extra = ("no_show", {}) if rng.random() < 0.5 else (
                "cancelled", {"cancelled_at": start - timedelta(hours=3), "cancelled_by": "client"})
        if status == "attended":
            attended += 1
            last_attended = start
            alliance = EpisodeAlerts(state, dict(open_alerts))
            evaluation = alliance.take(_srs(client, session, rng.gauss(own_mean, ASSUMED.srs_within_client_sd),
                                            start), rules=rules, now=now)
            state = alliance.state
            apply(evaluation.transitions, now)
        appointments[f"{client}-appt-{session}"] = Attendance(
            tenant=TENANT, appointment_id=f"{client}-appt-{session}", client_id=client, episode_id=episode.episode_id,
            status=status, start=start, recorded_at=now, **extra)
        verdict = judge_attendance(state, list(appointments.values()), open_alerts.values(), episode=episode,
                                   rules=rules, now=now)
        state = verdict.state
        apply(verdict.transitions, now)
    # the hourly sweep, five weeks after the last appointment
    end = T0 + timedelta(days=7 * (last + missed_after) + 35)
    verdict = judge_attendance(state, list(appointments.values()), open_alerts.values(), episode=episode,
                               rules=rules, now=end)
    apply(verdict.transitions, end)
    return dropout, attended, last_attended, alerts


def evaluate(clients: int = 400, seed: int = 15, rules: RuleSet | None = None) -> Figures:
    rng = random.Random(seed)
    rules = rules or load_ruleset()
    dropouts = alerted = true_positives = sessions = counted = 0
    leads: list[float] = []
    false_by_finding: dict[str, int] = {}
    for n in range(1, clients + 1):
        dropout, attended, last_attended, alerts = simulate_client(n, rng, rules)
        dropouts += dropout
        sessions += attended
        counted += len(alerts)
        if alerts:
            alerted += 1
            if dropout:
                true_positives += 1
                if last_attended is not None:
                    leads.append((alerts[0][0] - last_attended).total_seconds() / 86400)
            else:
                false_by_finding[alerts[0][1]] = false_by_finding.get(alerts[0][1], 0) + 1
    return Figures(
        clients=clients, dropouts=dropouts, attended_sessions=sessions, alerted_clients=alerted,
        true_positives=true_positives, precision=round(true_positives / alerted, 3) if alerted else None,
        recall=round(true_positives / dropouts, 3) if dropouts else None,
        lead_days_median=round(statistics.median(leads), 1) if leads else None,
        alerts_per_100_sessions=round(100 * counted / sessions, 2) if sessions else 0.0,
        false_alerts_by_finding=dict(sorted(false_by_finding.items())), seed=seed,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=400)
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    print(json.dumps(asdict(evaluate(args.clients, args.seed)), indent=2))


if __name__ == "__main__":
    main()
