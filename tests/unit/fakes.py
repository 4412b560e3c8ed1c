"""In-memory repositories of our own code, for handler-logic tests without a database (issue 10):
fakes of Rapport's ports, never of a broker or a database."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rapport.services.ingest.admission import Admission
from rapport.services.ingest.repository import Key
from rapport.services.ingest.unit_of_work import IngestUnitOfWork
from rapport.shared.contracts.submission import Submission


class InMemorySubmissions:
    def __init__(self) -> None:
        self.stored: dict[Key, tuple[int, str, Submission]] = {}
        self.loads = 0

    async def load_stored(self, keys: Sequence[Key]) -> dict[Key, tuple[int, str]]:
        self.loads += 1
        return {k: self.stored[k][:2] for k in keys if k in self.stored}

    async def save(self, admitted: Sequence[tuple[Submission, Admission]], now: datetime) -> None:
        for submission, admission in admitted:
            self.stored[(submission.tenant, submission.submission_id)] = (
                admission.revision, admission.content_hash, submission)


def ingest_unit_of_work(now: datetime, submissions: InMemorySubmissions | None = None) -> IngestUnitOfWork:
    return IngestUnitOfWork(submissions or InMemorySubmissions(), now)
