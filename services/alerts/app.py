"""Composition root of the alerts service: `rapport serve alerts`."""

from __future__ import annotations

from datetime import timedelta

from faststream.asgi import AsgiFastStream

from rapport.services.alerts.dashboard import DashboardGauges
from rapport.services.alerts.handlers import SERVICE, AlertCommands, Alerting, AttendanceAlerting
from rapport.services.alerts.models import inbox, outbox
from rapport.services.alerts.rules import load_ruleset
from rapport.services.alerts.sweep import SWEEP_SECONDS, AttendanceSweep
from rapport.services.alerts.trajectories import TrajectoryFits
from rapport.services.alerts.unit_of_work import AlertsUnitOfWork
from rapport.shared.contracts.alert import AlertCommandRejected, AlertTransition, EvaluationCompleted, Notification
from rapport.shared.contracts.attendance import AttendanceRecorded
from rapport.shared.instruments import load_registry
from rapport.shared.messaging import subjects
from rapport.shared.periodic import Periodic
from rapport.shared.service import ServiceRuntime
from rapport.shared.settings import Settings


def build(settings: Settings, broker_url: str) -> tuple[ServiceRuntime, AsgiFastStream]:
    runtime = ServiceRuntime(SERVICE, settings, broker_url, inbox=inbox, outbox=outbox)
    runtime.subscribe(
        subjects.SCORE_COMPUTED, "alerts-v2",
        Alerting(load_ruleset(), load_registry(),
                 TrajectoryFits(timedelta(seconds=settings.trajectory_refresh_seconds))),
        unit_of_work=AlertsUnitOfWork.on,
        description="Evaluates each computed score against the alert rules of its episode",
    )
    attendance = AttendanceAlerting(load_ruleset())  # each tenant's clinical policy is read per batch
    runtime.subscribe(
        subjects.ATTENDANCE_ACCEPTED, "alerts-attendance-v1", attendance,
        unit_of_work=AlertsUnitOfWork.on,
        description="Places each accepted appointment state in its episode and judges the episode's attendance "
                    "(disengagement; a rupture escalated by missed sessions)",
    )
    runtime.subscribe(
        subjects.INBOUND_ALERT_COMMANDS, "alert-commands-v2", AlertCommands(), unit_of_work=AlertsUnitOfWork.on,
        description="acknowledge / resolve commands from clinicians: "
                    '{"command_id", "alert_id", "action": "acknowledge"|"resolve", "by", "reason"}',
    )
    for verb, text in (("raised", "A new alert"), ("updated", "New evidence, acknowledgement or escalation"),
                       ("resolved", "Repaired, back on track, no longer deteriorated, or resolved by hand")):
        runtime.publishes(f"rapport.{{tenant}}.alert.{verb}", AlertTransition, description=text)
    runtime.publishes("rapport.{tenant}.notify.{clinician}", Notification,
                      description="What the clinician reads, once per transition that needs them")
    runtime.publishes("rapport.{tenant}.evaluation.completed", EvaluationCompleted,
                      description="The last event of every accepted submission's journey")
    runtime.publishes("rapport.{tenant}.attendance.recorded", AttendanceRecorded,
                      description="An appointment state placed in its episode, with the episode's attendance")
    runtime.publishes("rapport.{tenant}.alert-command.rejected", AlertCommandRejected,
                      description="An alert command that changed nothing, and why")
    gauges = DashboardGauges(runtime.sessions, runtime.clock)
    sweep = AttendanceSweep(attendance, runtime.sessions, outbox, runtime.clock)
    sweeping = Periodic("alerts-attendance-sweep", SWEEP_SECONDS, sweep.once)
    return runtime, runtime.asgi(background=[gauges, sweeping])
