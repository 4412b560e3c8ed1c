"""The dashboard's sign-in with the clinic's identity provider: the OAuth 2.0 authorization code
flow with PKCE (RFC 7636, S256), OpenID Connect's `nonce` and `state`.

`GET /sign-in/oidc` makes a fresh `state`, `nonce` and code verifier, keeps them in a short-lived
cookie (HttpOnly, SameSite=Lax so it comes back on the provider's redirect, path /sign-in, Secure
over TLS, ten minutes) and sends the browser to the provider's authorization endpoint with the
verifier's S256 challenge. `GET /sign-in/callback` checks the `state` against the cookie, exchanges
the code (with the verifier, so a code stolen on the way back is useless elsewhere) at the token
endpoint, verifies the ID token (this client's audience, the `nonce`) and the access token (Rapport's
audience, the same claims as a bearer token), and opens a session as a login link does, keeping the
ID token with it. Every way it can fail is one page that says to sign in again, and a row in the
audit trail.

Sign out (OpenID Connect RP-Initiated Logout 1.0): when the issuer's discovery document names an
`end_session_endpoint` on the issuer's own origin, Sign out of a session this flow opened ends
Rapport's session and then sends the browser there with the session's ID token as `id_token_hint`,
`client_id`, and `post_logout_redirect_uri` `<RAPPORT_GATEWAY_PUBLIC_URL>/signed-out` (register it
with the provider). Without the endpoint, with it on another origin (the pages' CSP lets a form
redirect only to the issuer's origin), or with the provider unreachable, Rapport's session ends alone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from rapport.services.gateway.http import may
from rapport.services.gateway.oidc import FETCH_TIMEOUT_SECONDS, IssuerUnavailable, OidcVerifier
from rapport.services.gateway.signin import SignIn
from rapport.services.gateway.tokens import InvalidToken, Principal

log = logging.getLogger("rapport.gateway")

FLOW_COOKIE = "rapport_oidc_flow"
FLOW_SECONDS = 600
CALLBACK = "/sign-in/callback"
SIGNED_OUT = "/signed-out"


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def code_challenge(verifier: str) -> str:
    """RFC 7636 S256: BASE64URL(SHA256(verifier)) without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


@dataclass(frozen=True)
class Flow:
    state: str
    nonce: str
    verifier: str
    started: float

    def cookie(self) -> str:
        return base64.urlsafe_b64encode(json.dumps([self.state, self.nonce, self.verifier, self.started]).encode()
                                        ).decode()

    @classmethod
    def from_cookie(cls, value: str) -> Flow | None:
        try:
            state, nonce, verifier, started = json.loads(base64.urlsafe_b64decode(value.encode()))
            return cls(str(state), str(nonce), str(verifier), float(started))
        except (ValueError, TypeError):
            return None


class SignInRefused(Exception):
    def __init__(self, code: str, principal: Principal | None = None) -> None:
        super().__init__(code)
        self.code, self.principal = code, principal


class CodeFlow:
    def __init__(self, verifier: OidcVerifier, sign_in: SignIn, *, client_id: str, client_secret: str | None,
                 public_url: str, scopes: str = "openid profile") -> None:
        self.verifier, self.sign_in = verifier, sign_in
        self.client_id, self.client_secret = client_id, client_secret
        self.redirect_uri = public_url.rstrip("/") + CALLBACK
        self.signed_out_uri = public_url.rstrip("/") + SIGNED_OUT
        self.scopes = scopes

    async def end_session_url(self, id_token: str) -> str | None:
        """Where the browser ends its session at the provider, or None (see the module's words)."""
        try:
            endpoint = (await self.verifier.discovery()).get("end_session_endpoint")
        except IssuerUnavailable:
            return None
        if not isinstance(endpoint, str) or origin_of(endpoint) != origin_of(self.verifier.issuer):
            return None
        query = urlencode({"id_token_hint": id_token, "post_logout_redirect_uri": self.signed_out_uri,
                           "client_id": self.client_id})
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    async def start(self, request: Request) -> Response:
        try:
            endpoint = str((await self.verifier.discovery())["authorization_endpoint"])
        except (IssuerUnavailable, KeyError):
            return self.sign_in.views.message(request, 503, "Sign-in is not available",
                                              "The clinic's sign-in service cannot be reached. Try again shortly.")
        flow = Flow(secrets.token_urlsafe(32), secrets.token_urlsafe(16), secrets.token_urlsafe(64), time.time())
        query = urlencode({"response_type": "code", "client_id": self.client_id, "redirect_uri": self.redirect_uri,
                           "scope": self.scopes, "state": flow.state, "nonce": flow.nonce,
                           "code_challenge": code_challenge(flow.verifier), "code_challenge_method": "S256"})
        response = RedirectResponse(f"{endpoint}{'&' if '?' in endpoint else '?'}{query}", status_code=303)
        response.set_cookie(FLOW_COOKIE, flow.cookie(), max_age=FLOW_SECONDS, path="/sign-in", httponly=True,
                            samesite="lax", secure=request.url.scheme == "https")
        response.headers["Cache-Control"] = "no-store"
        return response

    async def callback(self, request: Request) -> Response:
        try:
            principal, id_token = await self._principal(request)
        except SignInRefused as refused:
            log.info("sign-in with the identity provider refused (%s)", refused.code)
            await self.sign_in.audit.record(action="sign_in", outcome=401, principal=refused.principal,
                                            request=request, credential="oidc", detail=refused.code)
            refusal: Response = self.sign_in.views.message(
                request, 401, "Sign-in did not complete",
                "The sign-in could not be confirmed (it took too long, was opened in another browser, or the "
                "clinic's sign-in service refused it). Sign in again.")
            refusal.delete_cookie(FLOW_COOKIE, path="/sign-in")
            return refusal
        response = await self.sign_in.open_session(request, principal, credential="oidc", id_token=id_token)
        response.delete_cookie(FLOW_COOKIE, path="/sign-in")
        return response

    async def _principal(self, request: Request) -> tuple[Principal, str]:
        """The principal the provider signed in, and its ID token (for the sign-out's hint)."""
        params = request.query_params
        if "error" in params:
            raise SignInRefused("provider_refused")
        flow = Flow.from_cookie(request.cookies.get(FLOW_COOKIE, ""))
        if flow is None:
            raise SignInRefused("no_flow")
        if time.time() - flow.started > FLOW_SECONDS:
            raise SignInRefused("flow_expired")
        if not hmac.compare_digest(params.get("state", "").encode(), flow.state.encode()):
            raise SignInRefused("state_mismatch")
        code = params.get("code", "")
        if not code:
            raise SignInRefused("no_code")
        tokens = await self._exchange(code, flow.verifier)
        id_token = str(tokens.get("id_token", ""))
        try:
            identity = await self.verifier.claims(id_token, self.client_id)
            if not hmac.compare_digest(str(identity.get("nonce", "")).encode(), flow.nonce.encode()):
                raise SignInRefused("nonce_mismatch")
            principal = await self.verifier.verify(str(tokens.get("access_token", "")))
        except (InvalidToken, IssuerUnavailable) as error:
            raise SignInRefused(f"token_refused:{type(error).__name__}") from None
        if identity.get("sub") != principal.subject:
            raise SignInRefused("subject_mismatch", principal)
        if not may(principal, "use_dashboard"):
            raise SignInRefused("role_not_allowed", principal)
        return principal, id_token

    async def _exchange(self, code: str, code_verifier: str) -> dict[str, object]:
        try:
            endpoint = str((await self.verifier.discovery())["token_endpoint"])
            form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri,
                    "client_id": self.client_id, "code_verifier": code_verifier}
            async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False,
                                         auth=httpx.BasicAuth(self.client_id, self.client_secret)
                                         if self.client_secret else None) as http:
                answer = await http.post(endpoint, data=form, headers={"Accept": "application/json"})
            if answer.status_code != 200:
                raise SignInRefused(f"exchange_refused:{answer.status_code}")
            tokens = answer.json()
        except (IssuerUnavailable, KeyError, httpx.HTTPError, ValueError):
            raise SignInRefused("exchange_failed") from None
        if not isinstance(tokens, dict):
            raise SignInRefused("exchange_failed")
        return tokens

    def router(self) -> APIRouter:
        router = APIRouter(include_in_schema=False)

        @router.get("/sign-in/oidc")
        async def start(request: Request) -> Response:
            return await self.start(request)

        @router.get(CALLBACK)
        async def callback(request: Request) -> Response:
            return await self.callback(request)

        return router
