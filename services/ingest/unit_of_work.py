"""Ingest's units of work: the stored submissions (or appointment states) a batch reads and writes, in its
transaction."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from rapport.services.ingest.admission import Admission, AttendanceAdmission, StoredAppointment
from rapport.services.ingest.normalise import TenantMapping
from rapport.services.ingest.normalise.outcome import QuestionnaireMap
from rapport.services.ingest.repository import (
    ImportedQuestionnaire,
    Key,
    SqlAppointments,
    SqlQuestionnaireMappings,
    SqlSubmissions,
)
from rapport.shared.contracts.attendance import Attendance, EpisodeEnding
from rapport.shared.contracts.submission import Submission
from rapport.shared.unit_of_work import UnitOfWork


class Submissions(Protocol):
    """Where accepted submissions are kept (SqlSubmissions; an in-memory one in the handler tests)."""

    async def load_stored(self, keys: Sequence[Key]) -> dict[Key, tuple[int, str]]: ...

    async def save(self, admitted: Sequence[tuple[Submission, Admission]], now: datetime) -> None: ...


class QuestionnaireMappings(Protocol):
    """Each tenant's imported Questionnaires (SqlQuestionnaireMappings; in memory in the handler tests)."""

    async def load(self, tenants: Collection[str]) -> dict[str, TenantMapping]: ...


class NoMappings:
    """No tenant has imported a Questionnaire."""

    async def load(self, tenants: Collection[str]) -> dict[str, TenantMapping]:
        return {}


class IngestUnitOfWork(UnitOfWork):
    def __init__(self, submissions: Submissions, now: datetime, mappings: QuestionnaireMappings | None = None) -> None:
        super().__init__(now)
        self.submissions = submissions
        self.mappings: QuestionnaireMappings = mappings or NoMappings()

    @classmethod
    def on(cls, session: AsyncSession, now: datetime) -> IngestUnitOfWork:
        """The consumer's factory: the batch's session behind every repository."""
        return cls(SqlSubmissions(session), now, SqlQuestionnaireMappings(session))


class Appointments(Protocol):
    """Where the latest state of each appointment and each episode's ending is kept (SqlAppointments; in
    memory in the handler tests)."""

    async def load_stored(self, keys: Sequence[Key]) -> dict[Key, StoredAppointment]: ...

    async def save(self, admitted: Sequence[tuple[Attendance | EpisodeEnding, AttendanceAdmission]],
                   now: datetime) -> None: ...


class AttendanceUnitOfWork(UnitOfWork):
    def __init__(self, appointments: Appointments, now: datetime) -> None:
        super().__init__(now)
        self.appointments = appointments

    @classmethod
    def on(cls, session: AsyncSession, now: datetime) -> AttendanceUnitOfWork:
        return cls(SqlAppointments(session), now)


class StoredMappings(Protocol):
    """The tenants' imported Questionnaires as the mapping commands change them (SqlQuestionnaireMappings)."""

    async def imported(self, tenants: Collection[str]) -> dict[str, list[ImportedQuestionnaire]]: ...

    async def save(self, tenant: str, form: QuestionnaireMap, now: datetime) -> bool: ...

    async def remove(self, tenant: str, mapping_id: str) -> bool: ...


class MappingUnitOfWork(UnitOfWork):
    def __init__(self, mappings: StoredMappings, now: datetime) -> None:
        super().__init__(now)
        self.mappings = mappings

    @classmethod
    def on(cls, session: AsyncSession, now: datetime) -> MappingUnitOfWork:
        return cls(SqlQuestionnaireMappings(session), now)
