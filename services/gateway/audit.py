"""The audit trail (issue 11 item 4, HIPAA §164.312(b)-style): who did what to which record, when,
from where, and how it ended.

One append-only table, `gateway_audit`. A row names the person (subject, role, clinician), the time,
the action (the permission it used, or `sign_in` / `sign_out`), the resource as a path of ids
(`alert/<id>`, `client/<id>/episode/<id>`) and never a payload, the client's address, the
credential it came with (`session`, `bearer`, `link`) and the outcome as the HTTP status code
answered. Refusals are recorded too, with a short code saying why (`link_used`, `forbidden`); a
refused sign-in whose link could not be trusted has no tenant or subject, because nothing in it can be
believed. The migration adds triggers on both databases that refuse UPDATE and DELETE of a row.

Routes write rows with `await audit.record(...)`: given the open session of the transaction that
did the work, the row commits (or rolls back) with it; without one, the trail opens its own. The
submitting routes, whose work has no transaction of the gateway's to join (the message's record is
written before ingest answers; the answer's row by the answers' consumer), use `record_each`: their
rows are committed together with those of the other requests waiting at the same moment (a group
commit: one transaction for many requests, each answered only once its rows are on disk), so the
trail costs the HTTP door a shared write rather than one per request. Rows are
never pruned here: how long a clinic keeps them is its policy (HIPAA asks six years of the
documentation), not a setting Rapport guesses.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import BigInteger, Index, Integer, Select, String, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from rapport.services.gateway.http import Refused
from rapport.services.gateway.tokens import Principal
from rapport.shared.db.base import Base, UtcDateTime
from rapport.shared.db.group_commit import GroupCommit

MAX_PAGE = 500
DEFAULT_PAGE = 100


class AuditRow(Base):
    __tablename__ = "gateway_audit"

    # a sequence, so the order of the trail is the order it was written in, and pages are cut by id
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
                                    autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    tenant: Mapped[str | None] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str | None] = mapped_column(String(16))
    clinician: Mapped[str | None] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    resource: Mapped[str | None] = mapped_column(String(300))
    client_address: Mapped[str | None] = mapped_column(String(64))
    credential: Mapped[str | None] = mapped_column(String(16))
    outcome: Mapped[int] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_gateway_audit_tenant_at", "tenant", "at"),
        Index("ix_gateway_audit_tenant_subject", "tenant", "subject"),
    )


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    tenant: str | None
    subject: str | None
    role: str | None
    clinician: str | None
    action: str
    resource: str | None
    client_address: str | None
    credential: str | None
    outcome: int
    detail: str | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at.astimezone(UTC).isoformat(), "tenant": self.tenant,
                "subject": self.subject, "role": self.role, "clinician": self.clinician, "action": self.action,
                "resource": self.resource, "client_address": self.client_address, "credential": self.credential,
                "outcome": self.outcome, "detail": self.detail}


@dataclass(frozen=True)
class AuditFilters:
    tenant: str | None = None
    subject: str | None = None
    action: str | None = None
    # a resource path, or the start of one at a `/`: `client/c-1` matches `client/c-1/episode/e-2`
    resource: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def client_address(request: Request | None) -> str | None:
    if request is None or request.client is None:
        return None
    return request.client.host[:64]


def _clip(value: str | None, length: int) -> str | None:
    return None if value is None else value[:length]


class AuditRows:
    """Each request's audit rows, one INSERT for the group."""

    async def write(self, session: AsyncSession, requests: Sequence[list[dict[str, Any]]]) -> list[None]:
        rows = [row for rows in requests for row in rows]
        if rows:
            await session.execute(insert(AuditRow), rows)
        return [None] * len(requests)


AUDIT_ROWS = AuditRows()


class AuditTrail:
    """Writes and reads `gateway_audit`. Only `record` and `entries`: a row is never changed."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), writes: GroupCommit | None = None) -> None:
        """`writes`: the group commit of record_each, shared with the gateway's records of messages."""
        self._sessions = sessions
        self._clock = clock
        self._writes = writes or GroupCommit(sessions)

    async def record_each(self, *, action: str, outcome: int, principal: Principal | None, request: Request,
                          credential: str, parts: Sequence[tuple[str | None, str | None]]) -> None:
        """One row per (resource, detail), committed with whatever other requests are waiting; returns
        once they are on disk (raises what the database raised when they are not)."""
        credential = credential_of(request) or credential
        # plain rows for one INSERT of the whole group (no ORM objects: on the submission path their
        # bookkeeping was most of the trail's cost)
        who = {"at": self._clock(), "tenant": principal.tenant if principal else None,
               "subject": _clip(principal.subject, 255) if principal else None,
               "role": principal.role if principal else None,
               "clinician": principal.clinician if principal else None, "action": action[:64],
               "client_address": client_address(request), "credential": credential, "outcome": outcome}
        rows = [{**who, "resource": _clip(resource, 300), "detail": _clip(detail, 64)} for resource, detail in parts]
        await self._writes.write(AUDIT_ROWS, rows)

    def _row(self, *, action: str, outcome: int, principal: Principal | None, resource: str | None,
             request: Request | None, credential: str | None, detail: str | None) -> AuditRow:
        return AuditRow(
            at=self._clock(), tenant=principal.tenant if principal else None,
            subject=_clip(principal.subject, 255) if principal else None,
            role=principal.role if principal else None, clinician=principal.clinician if principal else None,
            action=action[:64], resource=_clip(resource, 300), client_address=client_address(request),
            credential=credential, outcome=outcome, detail=_clip(detail, 64),
        )

    async def record(self, *, action: str, outcome: int, principal: Principal | None = None,
                     resource: str | None = None, request: Request | None = None, credential: str | None = None,
                     detail: str | None = None, session: AsyncSession | None = None) -> None:
        """One row. `principal` None: nobody could be trusted (a refused sign-in, a missing token).
        With `session`, the row is part of that session's open transaction; without, it commits alone."""
        if credential is None and request is not None:
            credential = credential_of(request)
        row = self._row(action=action, outcome=outcome, principal=principal, resource=resource, request=request,
                        credential=credential, detail=detail)
        if session is not None:
            session.add(row)
            return
        async with self._sessions() as own, own.begin():
            own.add(row)

    async def entries(self, filters: AuditFilters, *, before: int | None = None,
                      limit: int = DEFAULT_PAGE) -> list[AuditEntry]:
        """Newest first; `before` an id from the previous page's last entry."""
        query = _filtered(select(AuditRow), filters)
        if before is not None:
            query = query.where(AuditRow.id < before)
        query = query.order_by(AuditRow.id.desc()).limit(max(1, limit))
        async with self._sessions() as session:
            rows = (await session.execute(query)).scalars().all()
        return [_entry(row) for row in rows]


def _filtered(query: Select[Any], filters: AuditFilters) -> Select[Any]:
    if filters.tenant is not None:
        query = query.where(AuditRow.tenant == filters.tenant)
    if filters.subject:
        query = query.where(AuditRow.subject == filters.subject)
    if filters.action:
        query = query.where(AuditRow.action == filters.action)
    if filters.resource:
        prefix = filters.resource.rstrip("/")
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(or_(AuditRow.resource == prefix, AuditRow.resource.like(f"{escaped}/%", escape="\\")))
    if filters.since is not None:
        query = query.where(AuditRow.at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditRow.at < filters.until)
    return query


def _entry(row: AuditRow) -> AuditEntry:
    return AuditEntry(id=row.id, at=row.at, tenant=row.tenant, subject=row.subject, role=row.role,
                      clinician=row.clinician, action=row.action, resource=row.resource,
                      client_address=row.client_address, credential=row.credential, outcome=row.outcome,
                      detail=row.detail)


def credential_of(request: Request) -> str | None:
    """What the request came with, as the sign-in module decided (it sets it on the request's state)."""
    value = getattr(request.state, "credential", None)
    return value if isinstance(value, str) else None


# paging cursors: opaque to callers, an id underneath


def cursor_for(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"a{entry_id}".encode()).decode().rstrip("=")


def id_from_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a cursor this gateway gave") from None
    if not text.startswith("a") or not text[1:].isdigit():
        raise ValueError("not a cursor this gateway gave")
    return int(text[1:])


def parse_time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise Refused(400, "invalid_time", f"{name} must be an ISO-8601 time with an offset", field=name) from None
    if when.tzinfo is None:
        raise Refused(400, "invalid_time", f"{name} must carry a UTC offset (e.g. +00:00)", field=name)
    return when


class Principals(Protocol):
    async def principal_of(self, request: Request, action: str) -> Principal: ...


def filters_from(request: Request, tenant: str | None) -> AuditFilters:
    query = request.query_params
    return AuditFilters(tenant=tenant, subject=query.get("subject") or None, action=query.get("action") or None,
                        resource=query.get("resource") or None, since=parse_time(query.get("since"), "since"),
                        until=parse_time(query.get("until"), "until"))


def page_of(request: Request) -> tuple[int | None, int]:
    query = request.query_params
    limit_text = query.get("limit", str(DEFAULT_PAGE))
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
        raise Refused(400, "invalid_limit", f"limit must be a whole number from 1 to {MAX_PAGE}", field="limit")
    cursor = query.get("cursor")
    try:
        before = id_from_cursor(cursor) if cursor else None
    except ValueError as error:
        raise Refused(400, "invalid_cursor", str(error), field="cursor") from None
    return before, int(limit_text)


def describe_filters(filters: AuditFilters) -> str | None:
    """What was asked, for the audit row of the read itself: field names only, never values a
    person typed (they could hold anything)."""
    asked = [name for name in ("subject", "action", "resource", "since", "until") if getattr(filters, name)]
    return ("filters " + ",".join(asked))[:64] if asked else None


def audit_router(trail: AuditTrail, principals: Principals) -> APIRouter:
    router = APIRouter(tags=["audit"])

    @router.get("/api/v1/audit", summary="The tenant's audit trail, newest first (role admin)",
                responses={200: {"description": "entries and the cursor of the next page"},
                           401: {"description": "no valid token or session"},
                           403: {"description": "the role may not read the audit trail"}})
    async def audit(request: Request) -> Response:
        principal = await principals.principal_of(request, "read_audit")
        filters = filters_from(request, principal.tenant)
        before, limit = page_of(request)
        entries = await trail.entries(filters, before=before, limit=limit)
        await trail.record(action="read_audit", outcome=200, principal=principal, request=request,
                           detail=describe_filters(filters))
        body: dict[str, Any] = {"entries": [e.as_json() for e in entries],
                                "next": cursor_for(entries[-1].id) if len(entries) == limit else None}
        return JSONResponse(body)

    return router


def lines(entries: Sequence[AuditEntry]) -> list[str]:
    """`rapport audit`'s table."""
    out = [f"{'id':>8}  {'at (UTC)':<19}  {'tenant':<16} {'subject':<24} {'role':<11} {'action':<16} "
           f"{'outcome':>7}  {'from':<15} resource / detail"]
    for e in entries:
        tail = " ".join(x for x in (e.resource, e.detail) if x)
        out.append(f"{e.id:>8}  {e.at.astimezone(UTC):%Y-%m-%d %H:%M:%S}  {e.tenant or '-':<16} "
                   f"{e.subject or '-':<24} {e.role or '-':<11} {e.action:<16} {e.outcome:>7}  "
                   f"{e.client_address or '-':<15} {tail}")
    return out


async def read_trail(database_url: str, filters: AuditFilters, limit: int, as_json: bool) -> str:
    """`rapport audit`: the newest `limit` entries matching, as a table or JSON lines."""
    import json

    from rapport.shared.db.engine import create_engine, session_factory

    engine = create_engine(database_url)
    try:
        entries = await AuditTrail(session_factory(engine)).entries(filters, limit=limit)
    finally:
        await engine.dispose()
    if as_json:
        return "\n".join(json.dumps(e.as_json()) for e in entries)
    return "\n".join(lines(entries)) if entries else "no audit entries match"
