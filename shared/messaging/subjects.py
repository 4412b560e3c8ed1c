"""Subject and stream names: every subject is `rapport.<tenant>.…` (DESIGN.md, public contracts).

Three streams, so that what clinic systems publish never shares a duplicate window with what the
services publish:
- `RAPPORT_IN`: what comes in (`rapport.<tenant>.in.>`), a work queue: a message is kept until the
  service that owns it has acknowledged it, no longer;
- `RAPPORT`: the events the services publish to each other and to the clinic;
- `RAPPORT_DLQ`: dead letters, kept until redriven or expired.
"""

from __future__ import annotations

from rapport.shared.contracts.tenancy import is_tenant_id

PREFIX = "rapport"

INBOUND_STREAM = "RAPPORT_IN"
EVENT_STREAM = "RAPPORT"
DEADLETTER_STREAM = "RAPPORT_DLQ"
# the entities of outbound events, `rapport.<tenant>.<entity>.<verb>`
EVENT_ENTITIES = ("submission", "score", "alert", "alert-command", "evaluation", "notify", "attendance",
                  "questionnaire-mapping")
STREAM_SUBJECTS = {
    INBOUND_STREAM: [f"{PREFIX}.*.in.>"],
    EVENT_STREAM: [f"{PREFIX}.*.{entity}.>" for entity in EVENT_ENTITIES],
    DEADLETTER_STREAM: [f"{PREFIX}.*.deadletter.>"],
}

INBOUND_SUBMISSIONS = f"{PREFIX}.*.in.submissions"
INBOUND_ALERT_COMMANDS = f"{PREFIX}.*.in.alert-commands"
INBOUND_ATTENDANCE = f"{PREFIX}.*.in.attendance"
INBOUND_QUESTIONNAIRE_MAPPINGS = f"{PREFIX}.*.in.questionnaire-mappings"
ATTENDANCE_ACCEPTED = f"{PREFIX}.*.attendance.accepted"
SUBMISSION_ACCEPTED = f"{PREFIX}.*.submission.accepted"
SCORE_COMPUTED = f"{PREFIX}.*.score.computed"
DEAD_LETTERS = f"{PREFIX}.*.deadletter.>"
# where a message whose subject names no valid tenant is dead-lettered: capitals are never part of a
# tenant id, so no tenant can read or redrive these as its own
UNROUTABLE = "UNROUTABLE"


def submissions_in(tenant: str) -> str:
    return f"{PREFIX}.{tenant}.in.submissions"


def attendance_in(tenant: str) -> str:
    return f"{PREFIX}.{tenant}.in.attendance"


def alert_commands_in(tenant: str) -> str:
    return f"{PREFIX}.{tenant}.in.alert-commands"


def questionnaire_mappings_in(tenant: str) -> str:
    return f"{PREFIX}.{tenant}.in.questionnaire-mappings"


def outbound(tenant: str, entity: str, verb: str) -> str:
    return f"{PREFIX}.{tenant}.{entity}.{verb}"


def notify(tenant: str, clinician_id: str) -> str:
    return f"{PREFIX}.{tenant}.notify.{clinician_id}"


def dead_letter(tenant: str, service: str) -> str:
    return f"{PREFIX}.{tenant}.deadletter.{service}"


def tenant_of(subject: str) -> str | None:
    """The tenant a message arrived for, read from its subject; None if the subject is not ours."""
    parts = subject.split(".")
    if len(parts) < 3 or parts[0] != PREFIX or not is_tenant_id(parts[1]):
        return None
    return parts[1]


def stream_of(subject: str) -> str:
    """The stream that captures a subject (publishing names it, so a typo fails instead of vanishing)."""
    parts = subject.split(".")
    if len(parts) >= 3 and parts[2] == "in":
        return INBOUND_STREAM
    if len(parts) >= 3 and parts[2] == "deadletter":
        return DEADLETTER_STREAM
    return EVENT_STREAM
