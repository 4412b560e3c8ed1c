"""Sign-in for the browser: one-time links, sessions, CSRF, and the one way every route learns who
is calling (issue 12 item 5, the embedded part).

`rapport login-link` mints a link token with the stack's Ed25519 key (the one `rapport token` signs
with), for the audience `<RAPPORT_OIDC_AUDIENCE>:sign-in`, so a link is never a bearer token and a
bearer token is never a link; it lives ten minutes and carries a `jti`. `GET /sign-in?link=...`
checks it, writes the `jti` to `gateway_sign_in_links` (its primary key: a second use of the link
fails on it, also across gateway replicas), starts a session and redirects to `/`.

Sessions are rows in `gateway_sessions`, not signed cookies: the cookie holds an opaque random id
(32 bytes), the table its SHA-256 (a copy of the table opens no session) with the principal, the
expiry, how it was opened (`credential`: `link` or `oidc`) and a `handle`: another random value,
unrelated to the id, by which an admin's page names the session to end it (never the id or its
hash, which would let a copy of the page stand for the session). Why a table: signing out, or an
admin ending a session, ends it at once on every replica, the expiry is the server's and not the
browser's, and the cookie carries nothing to read. The cookie is HttpOnly, SameSite=Lax, and Secure
when the request came over TLS.

CSRF: each session has a token, an HMAC of its id (so nothing more is stored), put in a hidden field
of every form and in the `X-CSRF-Token` header htmx sends (`hx-headers` on the body). A request that
comes with the session cookie and changes state (POST, PUT, PATCH, DELETE) without the token is
refused 403. A request with a bearer token is not checked: a browser never adds one on its own.

`principal_of(request, action)` answers with the same `Principal` the bearer path gives: a request
with an `Authorization` header is judged by it alone (`Gate.principal`), one without by its session
cookie, and one with neither is the bearer path's 401. A role that may not do `action` is 403, and
recorded in the audit trail.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import Index, String, Text, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from rapport.services.gateway.audit import AuditTrail
from rapport.services.gateway.http import Gate, Refused, may
from rapport.services.gateway.tokens import (
    ALGORITHM,
    EMBEDDED_ISSUER,
    LEEWAY_SECONDS,
    InvalidToken,
    Principal,
    mint,
    principal_from,
)
from rapport.services.gateway.views import Views
from rapport.shared.db.base import Base, UtcDateTime

log = logging.getLogger("rapport.gateway")

COOKIE = "rapport_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
LINK_TTL = timedelta(minutes=10)
# a link is for opening now, not for keeping: one minted for longer than this is refused
LINK_MAX_TTL = timedelta(hours=1)
# a working day; the clinician signs in again tomorrow
SESSION_TTL = timedelta(hours=12)
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{32,64}")


FORM_LIMIT = 16 * 1024


async def form_fields(request: Request) -> dict[str, str]:
    """An HTML form's fields (application/x-www-form-urlencoded, the only kind the pages send; the
    body is read once and kept on the request). Anything else, or a body over 16 KB: no fields."""
    cached = getattr(request.state, "form_fields", None)
    if isinstance(cached, dict):
        return cached
    fields: dict[str, str] = {}
    if request.headers.get("content-type", "").partition(";")[0].strip() == "application/x-www-form-urlencoded":
        body = await request.body()
        if len(body) <= FORM_LIMIT:
            try:
                parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
            except (UnicodeDecodeError, ValueError):
                parsed = {}
            fields = {name: values[0] for name, values in parsed.items() if values}
    request.state.form_fields = fields
    return fields


def link_audience(audience: str) -> str:
    return f"{audience}:sign-in"


class SignInLink(Base):
    """A link that was used: its `jti` may not sign anyone in again. Kept until it has expired."""

    __tablename__ = "gateway_sign_in_links"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_gateway_sign_in_links_expires_at", "expires_at"),)


class DashboardSession(Base):
    """A signed-in browser: the principal its link named, until `expires_at` or sign-out."""

    __tablename__ = "gateway_sessions"

    session_key: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the cookie's id
    tenant: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(255))
    clinician: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    handle: Mapped[str] = mapped_column(String(32))  # the admin page's name for it, unrelated to the id
    credential: Mapped[str] = mapped_column(String(16))  # how it was opened: link, oidc
    # the provider's ID token of a session opened by the code flow: the id_token_hint of its sign-out
    id_token: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_gateway_sessions_expires_at", "expires_at"),
                      Index("ix_gateway_sessions_handle", "handle", unique=True),
                      Index("ix_gateway_sessions_tenant", "tenant", "expires_at"))


@dataclass(frozen=True)
class LiveSession:
    """A live session as an admin's page lists it: who, how and since when, and its handle."""

    handle: str
    subject: str
    role: str
    clinician: str | None
    credential: str
    created_at: datetime
    expires_at: datetime


def mint_link(key: Ed25519PrivateKey, *, tenant: str, role: str, audience: str, now: datetime,
              clinician: str | None = None, ttl: timedelta = LINK_TTL) -> str:
    """A sign-in link's token (ValueError for a tenant, role or clinician `mint` refuses)."""
    if not timedelta(0) < ttl <= LINK_MAX_TTL:
        raise ValueError(f"a sign-in link lives at most {int(LINK_MAX_TTL.total_seconds() // 60)} minutes")
    return mint(key, tenant=tenant, role=role, clinician=clinician, audience=link_audience(audience), now=now,
                ttl=ttl)


def link_url(gateway: str, token: str) -> str:
    return f"{gateway.rstrip('/')}/sign-in?link={token}"


class LinkRefused(Exception):
    """Why a link signs nobody in; `principal` when its claims could still be trusted (an expired
    or used link), for the audit row."""

    def __init__(self, code: str, principal: Principal | None = None) -> None:
        super().__init__(code)
        self.code, self.principal = code, principal


@dataclass(frozen=True)
class Link:
    principal: Principal
    jti: str
    expires_at: datetime


def read_link(token: str, public_key: Ed25519PublicKey, audience: str, now: datetime) -> Link:
    """The link's principal, `jti` and expiry, judged at `now` (the gateway's clock, with the
    tokens' leeway), or LinkRefused with why."""
    try:
        # the signature, issuer, audience and claims here; the times below, against `now`
        claims: dict[str, Any] = jwt.decode(
            token, public_key, algorithms=[ALGORITHM], audience=link_audience(audience), issuer=EMBEDDED_ISSUER,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"], "verify_exp": False,
                     "verify_iat": False, "verify_nbf": False})
    except jwt.InvalidAudienceError:
        raise LinkRefused("not_a_link") from None
    except jwt.PyJWTError:
        raise LinkRefused("link_invalid") from None
    principal = _principal(claims)
    jti, issued, expires = claims["jti"], claims["iat"], claims["exp"]
    if (principal is None or principal.role is None or not isinstance(jti, str) or not 0 < len(jti) <= 64
            or not isinstance(issued, int) or not isinstance(expires, int)):
        raise LinkRefused("link_invalid")
    if principal.role == "clinician" and principal.clinician is None:
        raise LinkRefused("link_invalid", principal)
    if expires - issued > LINK_MAX_TTL.total_seconds():
        raise LinkRefused("link_too_long", principal)
    moment = now.timestamp()
    if issued > moment + LEEWAY_SECONDS:
        raise LinkRefused("link_not_yet_valid", principal)
    if expires <= moment - LEEWAY_SECONDS:
        raise LinkRefused("link_expired", principal)
    return Link(principal, jti, datetime.fromtimestamp(expires, UTC))


def _principal(claims: dict[str, Any]) -> Principal | None:
    try:
        return principal_from(claims)
    except InvalidToken:
        return None


@dataclass(frozen=True)
class SignedIn:
    """A request's session: who, and the CSRF token its forms carry."""

    principal: Principal
    csrf_token: str
    expires_at: datetime
    handle: str = ""


def _session_key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def csrf_token_for(session_id: str) -> str:
    return hmac.new(session_id.encode(), b"rapport-csrf-v1", hashlib.sha256).hexdigest()


class SignIn:
    """Links to sessions, sessions to principals. `link_key` None (an OIDC issuer configured, no
    embedded key): `/sign-in` refuses every link."""

    def __init__(self, gate: Gate, sessions: async_sessionmaker[AsyncSession], audit: AuditTrail, views: Views, *,
                 link_key: Ed25519PublicKey | None, audience: str,
                 clock: Any = lambda: datetime.now(UTC), session_ttl: timedelta = SESSION_TTL) -> None:
        self.gate, self._sessions, self.audit, self.views = gate, sessions, audit, views
        self.link_key, self.audience, self.clock, self.session_ttl = link_key, audience, clock, session_ttl
        # where Sign out sends a browser whose session the provider opened (oidc_sign_in.CodeFlow's
        # end_session_url, given the session's ID token): None to end Rapport's session only
        self.provider_sign_out: Callable[[str], Awaitable[str | None]] | None = None

    # who is calling

    async def signed_in(self, request: Request) -> SignedIn | None:
        """The request's live session, or None (no cookie, an unknown or expired one)."""
        cached = getattr(request.state, "signed_in", None)
        if isinstance(cached, SignedIn):
            return cached
        session_id = request.cookies.get(COOKIE, "")
        if not _SESSION_ID.fullmatch(session_id):
            return None
        async with self._sessions() as session:
            row = (await session.execute(select(DashboardSession).where(
                DashboardSession.session_key == _session_key(session_id),
                DashboardSession.expires_at > self.clock()))).scalar_one_or_none()
        if row is None:
            return None
        principal = Principal(tenant=row.tenant, role=row.role, subject=row.subject, clinician=row.clinician)
        found = SignedIn(principal, csrf_token_for(session_id), row.expires_at, row.handle)
        request.state.signed_in = found
        return found

    async def principal_of(self, request: Request, action: str, *, audited_as: str | None = None) -> Principal:
        """The caller, allowed to do `action`, or Refused (401, 403). See the module's words. A
        refusal is recorded under `audited_as` (default: the action)."""
        audited = audited_as or action
        if request.headers.get("authorization"):
            request.state.credential = "bearer"
            try:
                return await self.gate.principal(request, action)
            except Refused as refused:
                if refused.status == 403:
                    principal = await self.gate.verifier.verify(request.headers["authorization"].partition(" ")[2]
                                                                .strip())
                    await self.audit.record(action=audited, outcome=403, principal=principal, request=request,
                                            detail="forbidden")
                raise
        signed_in = await self.signed_in(request)
        if signed_in is None:
            return await self.gate.principal(request, action)  # the bearer path's 401
        request.state.credential = "session"
        principal = signed_in.principal
        if request.method in UNSAFE_METHODS and not await self._csrf_ok(request, signed_in):
            await self.audit.record(action=audited, outcome=403, principal=principal, request=request, detail="csrf")
            raise Refused(403, "csrf", "the form's CSRF token is missing or wrong: reload the page and try again",
                          field=CSRF_FIELD)
        if not may(principal, action):
            await self.audit.record(action=audited, outcome=403, principal=principal, request=request,
                                    detail="forbidden")
            raise Refused(403, "forbidden", f"the role {principal.role} may not {action}")
        return principal

    async def _csrf_ok(self, request: Request, signed_in: SignedIn) -> bool:
        sent = request.headers.get(CSRF_HEADER)
        if sent is None:
            sent = (await form_fields(request)).get(CSRF_FIELD)
        return sent is not None and hmac.compare_digest(sent.encode(), signed_in.csrf_token.encode())

    # links and sessions

    async def sign_in(self, request: Request, token: str) -> Response:
        now = self.clock()
        try:
            if self.link_key is None:
                raise LinkRefused("links_off")
            link = read_link(token, self.link_key, self.audience, now)
        except LinkRefused as refused:
            return await self._refuse(request, refused)
        try:
            return await self.open_session(request, link.principal, credential="link",
                                           proof=SignInLink(jti=link.jti, tenant=link.principal.tenant, used_at=now,
                                                            expires_at=link.expires_at))
        except IntegrityError:
            return await self._refuse(request, LinkRefused("link_used", link.principal))

    async def open_session(self, request: Request, principal: Principal, *, credential: str,
                           proof: Base | None = None, id_token: str | None = None) -> Response:
        """A new session for `principal`, its cookie and the redirect to `/`. `proof` (a used link)
        is written first in the same transaction: a second use fails there (IntegrityError).
        `id_token`: the provider's, kept for the sign-out's id_token_hint."""
        now = self.clock()
        session_id = secrets.token_urlsafe(32)
        async with self._sessions() as session, session.begin():
            if proof is not None:
                session.add(proof)
                await session.flush()
            previous = request.cookies.get(COOKIE, "")
            if _SESSION_ID.fullmatch(previous):  # signing in again replaces the browser's old session
                await session.execute(delete(DashboardSession).where(
                    DashboardSession.session_key == _session_key(previous)))
            assert principal.role is not None
            session.add(DashboardSession(
                session_key=_session_key(session_id), tenant=principal.tenant, role=principal.role,
                subject=principal.subject[:255], clinician=principal.clinician, created_at=now,
                expires_at=now + self.session_ttl, handle=secrets.token_urlsafe(16), credential=credential[:16],
                id_token=id_token))
            await self.audit.record(action="sign_in", outcome=303, principal=principal, request=request,
                                    credential=credential, session=session)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, session_id, max_age=int(self.session_ttl.total_seconds()), path="/",
                            httponly=True, samesite="lax", secure=request.url.scheme == "https")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    async def _refuse(self, request: Request, refused: LinkRefused) -> Response:
        log.info("sign-in link refused (%s)", refused.code)
        await self.audit.record(action="sign_in", outcome=401, principal=refused.principal, request=request,
                                credential="link", detail=refused.code)
        return self.views.message(
            request, 401, "This sign-in link cannot be used",
            "It has been used already, has expired, or was not made by this Rapport. "
            "Ask for a new one (rapport login-link) and open it within ten minutes.")

    async def sign_out(self, request: Request) -> Response:
        signed_in = await self.signed_in(request)
        if signed_in is None:
            return RedirectResponse("/", status_code=303)
        principal = await self.principal_of(request, "use_dashboard", audited_as="sign_out")  # the CSRF check
        key = _session_key(request.cookies[COOKIE])
        async with self._sessions() as session:
            id_token = (await session.execute(select(DashboardSession.id_token).where(
                DashboardSession.session_key == key))).scalar_one_or_none()
        # where the provider ends its own session (None: it names no end_session_endpoint, or cannot be
        # reached, and Rapport's session ends alone); asked before the transaction, which holds no wait
        provider = await self.provider_sign_out(id_token) if id_token and self.provider_sign_out else None
        async with self._sessions() as session, session.begin():
            await session.execute(delete(DashboardSession).where(DashboardSession.session_key == key))
            await self.audit.record(action="sign_out", outcome=303, principal=principal, request=request,
                                    detail="at_provider" if provider else None, session=session)
        response = RedirectResponse(provider or "/signed-out", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax", secure=request.url.scheme == "https")
        return response

    async def live_sessions(self, tenant: str) -> list[LiveSession]:
        """The tenant's sessions that have not expired, the newest first."""
        async with self._sessions() as session:
            rows = (await session.execute(select(DashboardSession).where(
                DashboardSession.tenant == tenant, DashboardSession.expires_at > self.clock())
                .order_by(DashboardSession.created_at.desc(), DashboardSession.handle))).scalars().all()
        return [LiveSession(r.handle, r.subject, r.role, r.clinician, r.credential, r.created_at, r.expires_at)
                for r in rows]

    async def end_session(self, request: Request, principal: Principal, handle: str) -> LiveSession | None:
        """Ends the live session of `principal`'s tenant named by `handle` at once (its next request
        is signed out, on every replica), audited `end_session` in the same transaction; None, and
        a 404 row, when the tenant has no such live session (another tenant's is not found)."""
        async with self._sessions() as session, session.begin():
            row = (await session.execute(select(DashboardSession).where(
                DashboardSession.tenant == principal.tenant, DashboardSession.handle == handle[:32],
                DashboardSession.expires_at > self.clock()).with_for_update())).scalar_one_or_none()
            ended = None if row is None else LiveSession(row.handle, row.subject, row.role, row.clinician,
                                                         row.credential, row.created_at, row.expires_at)
            if row is not None:
                await session.execute(delete(DashboardSession).where(DashboardSession.session_key == row.session_key))
            await self.audit.record(action="end_session", outcome=404 if ended is None else 200, principal=principal,
                                    request=request, resource=f"session/{handle[:32]}",
                                    detail=None if ended is None else f"{ended.role} {ended.subject}",
                                    session=session)
        return ended

    async def prune(self) -> None:
        """Expired sessions, and used links past their expiry (which refuses them anyway)."""
        now = self.clock()
        async with self._sessions() as session, session.begin():
            await session.execute(delete(DashboardSession).where(DashboardSession.expires_at <= now))
            await session.execute(delete(SignInLink).where(SignInLink.expires_at <= now - timedelta(
                seconds=LEEWAY_SECONDS)))

    def router(self) -> APIRouter:
        router = APIRouter(include_in_schema=False)

        @router.get("/sign-in")
        async def sign_in(request: Request, link: str = "") -> Response:
            return await self.sign_in(request, link)

        @router.post("/sign-out")
        async def sign_out(request: Request) -> Response:
            try:
                return await self.sign_out(request)
            except Refused as refused:
                return self.views.message(request, refused.status, "Not signed out", refused.message)

        @router.get("/signed-out")
        async def signed_out(request: Request) -> Response:
            return self.views.message(request, 200, "Signed out",
                                      "You are signed out. Open a new sign-in link to come back.")

        return router
