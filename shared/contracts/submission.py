"""The canonical submission every inbound form (native JSON, FHIR) normalises to, and ingest's answers."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from rapport.shared.contracts.problems import Problem
from rapport.shared.contracts.tenancy import PseudonymousId, SubjectToken, TenantId

SourceFormat = Literal["native", "fhir-questionnaire-response", "fhir-observation"]


class Submission(BaseModel):
    """One administration of one instrument to one client, as Rapport keeps it.

    `responses` maps item number (1-based, as in the instrument registry) to the value given, or to
    None when the item was asked and not answered (declined, data-absent-reason). Items the source
    did not send at all are absent. A total-only submission has no responses and a `reported_total`.
    """

    model_config = ConfigDict(frozen=True)

    tenant: TenantId
    submission_id: PseudonymousId
    instrument: str
    client_id: PseudonymousId
    episode_id: PseudonymousId | None = None
    clinician_id: SubjectToken | None = None
    administered_at: AwareDatetime
    session_number: int | None = Field(default=None, ge=0)
    responses: dict[int, float | None] = Field(default_factory=dict)
    reported_total: float | None = Field(
        default=None, description="a total the source stated; scored only when item-level data is absent"
    )
    item_level: bool = Field(default=True, description="False for total-only submissions (no critical-item check)")
    amends: bool = Field(default=False, description="the source marks this as a correction of an earlier one")
    source_format: SourceFormat = "native"
    warnings: list[Problem] = Field(default_factory=list)


class SubmissionAccepted(BaseModel):
    """`rapport.<tenant>.submission.accepted`: stored; scoring takes it from here.

    `disposition` is `new` for a first submission, `amended` when the same submission id came with new
    content (revision goes up and the new content supersedes the old), `unchanged` for a resubmission
    of content already accepted (nothing downstream changes).
    """

    model_config = ConfigDict(frozen=True)

    submission: Submission
    revision: int = Field(ge=1)
    disposition: Literal["new", "amended", "unchanged"]
    inbound_message_id: str
    inbound_part: int = Field(default=1, ge=1, description="this answer's place among the message's answers")
    inbound_parts: int = Field(default=1, ge=1, description="how many answers the message gets (Bundles: >1)")


class SubmissionRejected(BaseModel):
    """`rapport.<tenant>.submission.rejected`: not stored; every problem is named so IT can fix it."""

    model_config = ConfigDict(frozen=True)

    submission_id: str | None = Field(default=None, description="the id the source gave, when it could be read")
    inbound_message_id: str
    inbound_part: int = Field(default=1, ge=1)
    inbound_parts: int = Field(default=1, ge=1)
    source_format: SourceFormat | None = None
    problems: list[Problem]
