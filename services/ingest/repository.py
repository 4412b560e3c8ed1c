"""Reads and writes of ingest_submissions, ingest_attendance and ingest_questionnaire_mappings, a batch at a time."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from rapport.services.ingest.admission import Admission, AttendanceAdmission, StoredAppointment, record_id
from rapport.services.ingest.models import StoredAttendance, StoredQuestionnaireMapping, StoredSubmission
from rapport.services.ingest.normalise.outcome import QuestionnaireMap, TenantMapping, canonical_key
from rapport.shared.contracts.attendance import Attendance, EpisodeEnding
from rapport.shared.contracts.submission import Submission
from rapport.shared.db.engine import is_postgres

Key = tuple[str, str]
submissions = cast(Table, StoredSubmission.__table__)
appointments = cast(Table, StoredAttendance.__table__)
questionnaire_mappings = cast(Table, StoredQuestionnaireMapping.__table__)


class SqlSubmissions:
    """The stored submissions of one batch's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def load_stored(self, keys: Sequence[Key]) -> dict[Key, tuple[int, str]]:
        """Revision and content hash of the stored submissions; locked on PostgreSQL (in key order) so
        two replicas never both take one submission to the same next revision (a new one inserted twice
        fails one replica on its key, which retries)."""
        if not keys:
            return {}
        table = submissions
        query = select(table.c.tenant, table.c.submission_id, table.c.revision, table.c.content_hash).where(
            tuple_(table.c.tenant, table.c.submission_id).in_(sorted(set(keys)))
        )
        if is_postgres(self._session):
            query = query.order_by(table.c.tenant, table.c.submission_id).with_for_update()
        rows = await self._session.execute(query)
        return {(r.tenant, r.submission_id): (r.revision, r.content_hash) for r in rows}

    async def save(self, admitted: Sequence[tuple[Submission, Admission]], now: datetime) -> None:
        table = submissions
        fresh = [(s, a) for s, a in admitted if a.disposition == "new"]
        amended = [(s, a) for s, a in admitted if a.disposition == "amended"]
        if fresh:
            await self._session.execute(table.insert(), [_row(s, a, now) for s, a in fresh])
        for submission, admission in amended:
            await self._session.execute(
                update(table)
                .where(table.c.tenant == submission.tenant, table.c.submission_id == submission.submission_id)
                .values(_row(submission, admission, now))
            )


def _row(submission: Submission, admission: Admission, now: datetime) -> dict[str, object]:
    return {
        "tenant": submission.tenant,
        "submission_id": submission.submission_id,
        "revision": admission.revision,
        "content_hash": admission.content_hash,
        "instrument": submission.instrument,
        "accepted_at": now,
        "document": submission.model_dump(mode="json"),
    }


class SqlAppointments:
    """The stored appointment states of one batch's transaction (ingest_attendance)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def load_stored(self, keys: Sequence[Key]) -> dict[Key, StoredAppointment]:
        """Revision, content hash, recorded_at and version of the stored appointments; locked on
        PostgreSQL in key order, as submissions are."""
        if not keys:
            return {}
        table = appointments
        query = select(table.c.tenant, table.c.appointment_id, table.c.revision, table.c.content_hash,
                       table.c.recorded_at, table.c.version).where(
            tuple_(table.c.tenant, table.c.appointment_id).in_(sorted(set(keys))))
        if is_postgres(self._session):
            query = query.order_by(table.c.tenant, table.c.appointment_id).with_for_update()
        rows = await self._session.execute(query)
        return {(r.tenant, r.appointment_id): (r.revision, r.content_hash, r.recorded_at, r.version) for r in rows}

    async def save(self, admitted: Sequence[tuple[Attendance | EpisodeEnding, AttendanceAdmission]],
                   now: datetime) -> None:
        table = appointments
        fresh = [_appointment_row(a, d, now) for a, d in admitted if d.disposition == "new"]
        if fresh:
            await self._session.execute(table.insert(), fresh)
        for attendance, admission in admitted:
            if admission.disposition == "amended":
                await self._session.execute(
                    update(table)
                    .where(table.c.tenant == attendance.tenant, table.c.appointment_id == record_id(attendance))
                    .values(_appointment_row(attendance, admission, now))
                )


def _appointment_row(attendance: Attendance | EpisodeEnding, admission: AttendanceAdmission,
                     now: datetime) -> dict[str, object]:
    return {
        "tenant": attendance.tenant, "appointment_id": record_id(attendance), "revision": admission.revision,
        "content_hash": admission.content_hash, "recorded_at": attendance.recorded_at,
        "version": attendance.version, "accepted_at": now, "document": attendance.model_dump(mode="json"),
    }


def questionnaire_key(canonical: str, version: str | None) -> str:
    """The row key of one Questionnaire: a digest, so a canonical of any length fits the key column."""
    return hashlib.sha256(f"{canonical_key(canonical)}|{version or ''}".encode()).hexdigest()


@dataclass(frozen=True)
class ImportedQuestionnaire:
    """One of a tenant's imported Questionnaires as stored: its id (the row key), its map and when it came."""

    mapping_id: str
    form: QuestionnaireMap
    imported_at: datetime


class SqlQuestionnaireMappings:
    """Each tenant's imported Questionnaires (ingest_questionnaire_mappings)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def load(self, tenants: Collection[str]) -> dict[str, TenantMapping]:
        """The mappings of the batch's tenants in one read; a tenant with none is absent."""
        found = await self.imported(tenants)
        return {tenant: TenantMapping.of_forms([i.form for i in forms]) for tenant, forms in found.items()}

    async def imported(self, tenants: Collection[str]) -> dict[str, list[ImportedQuestionnaire]]:
        """The stored Questionnaires of these tenants in one read, each tenant's by canonical and version."""
        if not tenants:
            return {}
        table = questionnaire_mappings
        rows = await self._session.execute(
            select(table.c.tenant, table.c.questionnaire_key, table.c.canonical, table.c.version,
                   table.c.instrument, table.c.imported_at, table.c.document)
            .where(table.c.tenant.in_(sorted(set(tenants)))).order_by(table.c.tenant, table.c.questionnaire_key))
        found: dict[str, list[ImportedQuestionnaire]] = {}
        for r in rows:
            found.setdefault(r.tenant, []).append(ImportedQuestionnaire(r.questionnaire_key, _form(r), r.imported_at))
        for forms in found.values():
            forms.sort(key=lambda i: (i.form.canonical, i.form.version or ""))
        return found

    async def save(self, tenant: str, form: QuestionnaireMap, now: datetime) -> bool:
        """Store (or replace) one Questionnaire of a tenant; True when it replaced an earlier import."""
        table = questionnaire_mappings
        key = questionnaire_key(form.canonical, form.version)
        replaced = await self.remove(tenant, key)
        await self._session.execute(table.insert(), [{
            "tenant": tenant, "questionnaire_key": key, "canonical": form.canonical, "version": form.version,
            "instrument": form.instrument, "imported_at": now, "document": _document(form)}])
        return replaced

    async def remove(self, tenant: str, mapping_id: str) -> bool:
        """Delete one of a tenant's Questionnaires by its id; False when the tenant has none by that id."""
        table = questionnaire_mappings
        gone = await self._session.execute(
            delete(table).where(table.c.tenant == tenant, table.c.questionnaire_key == mapping_id))
        return bool(getattr(gone, "rowcount", 0))


def _document(form: QuestionnaireMap) -> dict[str, object]:
    return {"link_ids": form.link_ids, "weights": form.weights, "source": form.source, "displays": form.displays,
            "total_link_ids": list(form.total_link_ids)}


def _form(r: Any) -> QuestionnaireMap:
    return QuestionnaireMap(
        canonical=r.canonical, version=r.version, instrument=r.instrument,
        link_ids={k: int(v) for k, v in r.document.get("link_ids", {}).items()},
        weights={k: {c: float(w) for c, w in v.items()} for k, v in r.document.get("weights", {}).items()},
        source=str(r.document.get("source", "")),
        displays={k: {str(d): str(c) for d, c in v.items()} for k, v in r.document.get("displays", {}).items()},
        total_link_ids=tuple(str(t) for t in r.document.get("total_link_ids", ())))
