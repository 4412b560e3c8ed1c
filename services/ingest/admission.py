"""Whether a valid submission is new, an amendment, or a resubmission of what is already stored."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from rapport.shared.contracts.submission import Submission


@dataclass(frozen=True)
class Admission:
    revision: int
    disposition: Literal["new", "amended", "unchanged"]
    content_hash: str

    @property
    def changes_anything(self) -> bool:
        return self.disposition != "unchanged"


def content_hash(submission: Submission) -> str:
    """Identity of the clinical content; warnings and the source's amend flag are not content."""
    content = submission.model_dump_json(exclude={"warnings", "amends"})
    return hashlib.sha256(content.encode()).hexdigest()


def admit(submission: Submission, stored: tuple[int, str] | None) -> Admission:
    """`stored` is (revision, content hash) of what ingest already holds for this submission id.

    The same id with new content supersedes the old as the next revision, whether or not the source
    flagged it as an amendment: the latest word of the clinic's system stands.
    """
    digest = content_hash(submission)
    if stored is None:
        return Admission(revision=1, disposition="new", content_hash=digest)
    revision, previous_digest = stored
    if previous_digest == digest:
        return Admission(revision=revision, disposition="unchanged", content_hash=digest)
    return Admission(revision=revision + 1, disposition="amended", content_hash=digest)
