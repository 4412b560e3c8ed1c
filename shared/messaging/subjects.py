"""Subject names: every subject is `rapport.<tenant>.…` (DESIGN.md, public contracts)."""

from __future__ import annotations

from shared.contracts.tenancy import is_tenant_id

PREFIX = "rapport"
STREAM_NAME = "RAPPORT"
STREAM_SUBJECTS = [f"{PREFIX}.>"]

INBOUND_SUBMISSIONS = f"{PREFIX}.*.in.submissions"
INBOUND_ALERT_COMMANDS = f"{PREFIX}.*.in.alert-commands"
SUBMISSION_ACCEPTED = f"{PREFIX}.*.submission.accepted"
SCORE_COMPUTED = f"{PREFIX}.*.score.computed"


def submissions_in(tenant: str) -> str:
    return f"{PREFIX}.{tenant}.in.submissions"


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
