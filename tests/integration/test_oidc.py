"""Tokens from an OIDC identity provider: a real issuer on loopback (discovery document, JWKS,
authorization and token endpoints over HTTP, keys made here), Keycloak-, Entra- and Okta-shaped
claims, every way a token can be wrong, a key rotation, a flood of unknown key ids, the provider
down; the gateway configured with RAPPORT_OIDC_ISSUER answering the alert API by those tokens; and
the dashboard's sign-in by the authorization code flow with PKCE, with each way it can be abused;
and Sign out ending the session at the provider too (RP-Initiated Logout) where it names how."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from test_gateway import client, gateway_settings, serving, token

from rapport.embedded_nats import free_port
from rapport.services.gateway.audit import AuditRow
from rapport.services.gateway.oidc import IssuerUnavailable, OidcVerifier
from rapport.services.gateway.oidc_sign_in import FLOW_COOKIE, Flow
from rapport.services.gateway.tokens import ClaimNames, InvalidToken
from rapport.shared.db.engine import create_engine, session_factory

AUDIENCE = "rapport-gateway"
CLIENT_ID = "rapport-dashboard"
PUBLIC_URL = "http://rapport.clinic.test"


@dataclass
class Issuer:
    """A loopback identity provider: its signing keys can be rotated and it can be taken down."""

    url: str = ""
    keys: dict[str, Any] = field(default_factory=dict)  # kid -> private key
    jwks_fetches: int = 0
    down: bool = False
    # the authorization endpoint signs in whoever this says, and remembers each code it gave
    user: dict[str, Any] = field(default_factory=dict)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    wrong_nonce: bool = False
    # with end_session, discovery names the end_session_endpoint; every ID token given, every sign-out asked
    end_session: bool = False
    id_tokens: list[str] = field(default_factory=list)
    sign_outs: list[dict[str, str]] = field(default_factory=list)

    def add_key(self, kind: str = "rsa") -> str:
        kid = f"{kind}-{uuid.uuid4().hex[:8]}"
        self.keys[kid] = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa"
                          else ec.generate_private_key(ec.SECP256R1()))
        return kid

    def sign(self, claims: dict[str, Any], *, kid: str | None = None, key: Any = None, **header: Any) -> str:
        kid = kid or next(iter(self.keys))
        key = key or self.keys[kid]
        algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        now = datetime.now(UTC)
        full = {"iss": self.url, "aud": AUDIENCE, "sub": f"user-{uuid.uuid4().hex[:6]}",
                "iat": int(now.timestamp()), "exp": int((now + timedelta(minutes=5)).timestamp()), **claims}
        return jwt.encode(full, key, algorithm=algorithm, headers={"kid": kid, **header})

    def jwks(self) -> dict[str, Any]:
        entries = []
        for kid, key in self.keys.items():
            public = key.public_key()
            entry = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public) if isinstance(key, rsa.RSAPrivateKey)
                               else jwt.algorithms.ECAlgorithm.to_jwk(public))
            entries.append({**entry, "kid": kid, "use": "sig"})
        return {"keys": entries}


@asynccontextmanager
async def issuing() -> AsyncIterator[Issuer]:
    issuer = Issuer()

    async def discovery(request: Request) -> Response:
        if issuer.down:
            return Response(status_code=503)
        ending = {"end_session_endpoint": f"{issuer.url}/protocol/openid-connect/logout"} if issuer.end_session else {}
        return JSONResponse({"issuer": issuer.url, "jwks_uri": f"{issuer.url}/protocol/openid-connect/certs",
                             "authorization_endpoint": f"{issuer.url}/protocol/openid-connect/auth",
                             "token_endpoint": f"{issuer.url}/protocol/openid-connect/token", **ending})

    async def logout(request: Request) -> Response:
        asked = dict(request.query_params)
        issuer.sign_outs.append(asked)
        if asked.get("id_token_hint") not in issuer.id_tokens:
            return Response("unknown id_token_hint", status_code=400)
        return Response(status_code=302, headers={"Location": asked["post_logout_redirect_uri"]})

    async def authorize(request: Request) -> Response:
        asked = request.query_params
        if asked.get("client_id") != CLIENT_ID or asked.get("code_challenge_method") != "S256" \
                or asked.get("response_type") != "code" or "openid" not in asked.get("scope", "").split():
            return Response("bad authorization request", status_code=400)
        code = uuid.uuid4().hex
        issuer.codes[code] = {"redirect_uri": asked["redirect_uri"], "challenge": asked["code_challenge"],
                              "nonce": asked["nonce"], "user": dict(issuer.user), "used": False}
        return Response(status_code=302, headers={
            "Location": f"{asked['redirect_uri']}?{urlencode({'code': code, 'state': asked['state']})}"})

    async def exchange(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        given = issuer.codes.get(str(form.get("code")))
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        if given is None or given["used"] or form.get("grant_type") != "authorization_code" \
                or form.get("redirect_uri") != given["redirect_uri"] or form.get("client_id") != CLIENT_ID \
                or challenge != given["challenge"]:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        given["used"] = True
        subject = f"user-{uuid.uuid4().hex[:6]}"
        access = issuer.sign({**given["user"], "sub": subject})
        identity = issuer.sign({"sub": subject, "aud": CLIENT_ID,
                                "nonce": "another" if issuer.wrong_nonce else given["nonce"]})
        issuer.id_tokens.append(identity)
        return JSONResponse({"access_token": access, "id_token": identity, "token_type": "Bearer"})

    async def certs(request: Request) -> Response:
        if issuer.down:
            return Response(status_code=503)
        issuer.jwks_fetches += 1
        return JSONResponse(issuer.jwks())

    app = Starlette(routes=[Route("/realms/clinic/.well-known/openid-configuration", discovery),
                            Route("/realms/clinic/protocol/openid-connect/certs", certs),
                            Route("/realms/clinic/protocol/openid-connect/auth", authorize),
                            Route("/realms/clinic/protocol/openid-connect/token", exchange, methods=["POST"]),
                            Route("/realms/clinic/protocol/openid-connect/logout", logout)])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None,
                                           access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the issuer did not start"
        await asyncio.sleep(0.02)
    issuer.url = f"http://127.0.0.1:{server.config.port}/realms/clinic"
    issuer.add_key()
    try:
        yield issuer
    finally:
        server.should_exit = True
        await task


def hmac_signed(claims: dict[str, Any], secret: bytes, *, kid: str) -> str:
    """The algorithm-confusion attack, made by hand (PyJWT itself refuses to sign it): HS256 keyed
    with what the issuer publishes."""
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")
    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{part(claims)}"
    digest = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(digest).decode().rstrip('=')}"


def verifier(issuer: Issuer, **names: str) -> OidcVerifier:
    return OidcVerifier(issuer.url, AUDIENCE, names=ClaimNames(**names))


async def test_keycloak_entra_and_okta_shaped_tokens_give_the_tenant_role_and_clinician_their_claims_name() -> None:
    async with issuing() as issuer:
        keycloak = verifier(issuer, tenant="rapport_tenant", role="realm_access.roles", clinician="clinician_id")
        lead = await keycloak.verify(issuer.sign({"rapport_tenant": "acme", "realm_access": {
            "roles": ["offline_access", "uma_authorization", "lead"]}}))
        assert (lead.tenant, lead.role, lead.clinician) == ("acme", "lead", None)
        issuer.add_key("ec")
        entra = verifier(issuer, tenant="extension_tenant", role="roles", clinician="oid")
        clinician = await entra.verify(issuer.sign(
            {"extension_tenant": "acme", "roles": ["clinician"], "oid": "4f1c2d8e-0b7a-4c55-9d0e-1a2b3c4d5e6f"},
            kid=list(issuer.keys)[1]))
        assert (clinician.role, clinician.clinician) == ("clinician", "4f1c2d8e-0b7a-4c55-9d0e-1a2b3c4d5e6f")
        okta = verifier(issuer, role="groups")
        integration = await okta.verify(issuer.sign({"tenant": "acme", "groups": ["Everyone", "integration"]}))
        assert integration.role == "integration"
        nobody = await okta.verify(issuer.sign({"tenant": "acme", "groups": ["Everyone"]}))
        assert nobody.role is None, "a token naming no Rapport role has none (403 at every route)"


async def test_every_way_a_token_can_be_wrong_is_refused() -> None:
    async with issuing() as issuer:
        check = verifier(issuer)
        good = {"tenant": "acme", "role": "lead"}
        assert (await check.verify(issuer.sign(good))).role == "lead"
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_jwk = issuer.jwks()["keys"][0]
        wrong = {
            "another audience": issuer.sign({**good, "aud": "someone-else"}),
            "another issuer": issuer.sign({**good, "iss": "http://127.0.0.1:1/realms/other"}),
            "expired": issuer.sign({**good, "exp": int((datetime.now(UTC) - timedelta(minutes=5)).timestamp())}),
            "signed by another key under the issuer's kid": issuer.sign(good, key=stranger),
            "unsigned": jwt.encode({**good, "iss": issuer.url, "aud": AUDIENCE, "sub": "x", "exp": 2**31}, None,
                                   algorithm="none", headers={"kid": next(iter(issuer.keys))}),
            "HMAC keyed with the public key": hmac_signed(
                {**good, "iss": issuer.url, "aud": AUDIENCE, "sub": "x", "exp": 2**31},
                json.dumps(public_jwk).encode(), kid=next(iter(issuer.keys))),
            "no tenant": issuer.sign({"role": "lead"}),
            "not a JWT": "not.a.token",
        }
        for why, bad in wrong.items():
            with pytest.raises(InvalidToken):
                await check.verify(bad)
                pytest.fail(why)


async def test_a_rotated_key_is_fetched_once_and_made_up_key_ids_do_not_flood_the_provider() -> None:
    async with issuing() as issuer:
        check = verifier(issuer)
        await check.verify(issuer.sign({"tenant": "acme", "role": "lead"}))
        assert issuer.jwks_fetches == 1
        for _ in range(20):
            await check.verify(issuer.sign({"tenant": "acme", "role": "lead"}))
        assert issuer.jwks_fetches == 1, "held keys are used without asking again"
        check._fetched_at -= 60  # as if the refresh interval had passed
        new_kid = issuer.add_key()
        assert (await check.verify(issuer.sign({"tenant": "acme", "role": "lead"}, kid=new_kid))).role == "lead"
        assert issuer.jwks_fetches == 2
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for n in range(20):
            with pytest.raises(InvalidToken):
                await check.verify(issuer.sign({"tenant": "acme"}, kid=f"made-up-{n}", key=stranger))
        assert issuer.jwks_fetches == 2, "unknown kids within the refresh interval fetch nothing"


async def test_with_the_provider_down_held_keys_still_verify_and_without_any_the_caller_is_told_to_wait() -> None:
    async with issuing() as issuer:
        check = verifier(issuer)
        signed = issuer.sign({"tenant": "acme", "role": "lead"})
        issuer.down = True
        with pytest.raises(IssuerUnavailable):
            await check.verify(signed)
        issuer.down = False
        check._fetched_at -= 60
        assert (await check.verify(signed)).role == "lead"
        issuer.down = True
        check._fetched_at -= 60
        assert (await check.verify(signed)).role == "lead", "a failed refetch keeps the keys held"


@pytest.mark.nats
async def test_the_gateway_configured_with_an_issuer_answers_by_its_tokens_only(
    sqlite_databases: Any, nats_url: str, tenant: str, key_file: Path
) -> None:
    database_url = await sqlite_databases.sqlite()
    async with issuing() as issuer:
        settings = gateway_settings(database_url, key_file, oidc_issuer=issuer.url, oidc_audience=AUDIENCE,
                                    oidc_role_claim="realm_access.roles")
        lead = issuer.sign({"tenant": tenant, "realm_access": {"roles": ["lead"]}})
        issuer.down = True
        async with serving(settings, nats_url) as base, client(base, lead) as http:
            waiting = await http.get("/api/v1/alerts")
            assert waiting.status_code == 503 and waiting.headers["retry-after"] == "5"
            assert waiting.json()["problems"][0]["code"] == "identity_provider_unavailable"
            issuer.down = False
            listed = await http.get("/api/v1/alerts")
            assert listed.status_code == 200 and listed.json()["total"] == 0
            embedded = await http.get("/api/v1/alerts", headers={
                "Authorization": f"Bearer {token(key_file, tenant, 'lead', audience=AUDIENCE)}"})
            assert embedded.status_code == 401, "the embedded key signs nothing once an issuer is set"


async def _walk(http: httpx.AsyncClient, base: str, *, tamper: Any = None) -> httpx.Response:
    """A browser signing in: the gateway sends it to the provider, which sends it back with a code."""
    started = await http.get(f"{base}/sign-in/oidc")
    assert started.status_code == 303 and started.headers["location"].startswith("http://127.0.0.1")
    back = await http.get(started.headers["location"])
    assert back.status_code == 302, back.text
    callback = urlsplit(back.headers["location"])
    assert f"{callback.scheme}://{callback.netloc}" == PUBLIC_URL and callback.path == "/sign-in/callback"
    query = tamper(callback.query) if tamper else callback.query
    return await http.get(f"{base}{callback.path}?{query}")


@pytest.mark.nats
async def test_the_dashboard_signs_in_by_the_code_flow_with_pkce_and_refuses_each_abuse_of_it(
    sqlite_databases: Any, nats_url: str, tenant: str, key_file: Path
) -> None:
    database_url = await sqlite_databases.sqlite()
    async with issuing() as issuer:
        issuer.user = {"tenant": tenant, "realm_access": {"roles": ["lead"]}}
        settings = gateway_settings(database_url, key_file, oidc_issuer=issuer.url, oidc_audience=AUDIENCE,
                                    oidc_role_claim="realm_access.roles", oidc_client_id=CLIENT_ID,
                                    gateway_public_url=PUBLIC_URL)
        async with serving(settings, nats_url) as base:
            async with httpx.AsyncClient(timeout=10) as browser:
                signed_in = await _walk(browser, base)
                assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
                assert "HttpOnly" in signed_in.headers["set-cookie"]
                listed = await browser.get(f"{base}/api/v1/alerts")
                assert listed.status_code == 200, "the session is the lead's, without a bearer token"
                replayed = await browser.get(f"{base}{urlsplit(str(signed_in.request.url)).path}?"
                                             f"{signed_in.request.url.query.decode()}")
                assert replayed.status_code == 401, "the flow ends with its first answer: a replayed callback fails"

            refused: dict[str, int] = {}
            async with httpx.AsyncClient(timeout=10) as browser:
                refused["state changed"] = (await _walk(
                    browser, base, tamper=lambda q: q.replace("state=", "state=forged"))).status_code
            async with httpx.AsyncClient(timeout=10) as browser:
                started = await browser.get(f"{base}/sign-in/oidc")
                back = await browser.get(started.headers["location"])
                query = urlsplit(back.headers["location"]).query
            async with httpx.AsyncClient(timeout=10) as elsewhere:  # the code opened in another browser
                refused["no flow cookie"] = (await elsewhere.get(f"{base}/sign-in/callback?{query}")).status_code
                # an attacker's own flow, given the victim's state and code: its verifier does not match
                await elsewhere.get(f"{base}/sign-in/oidc")
                mine = Flow.from_cookie(elsewhere.cookies[FLOW_COOKIE])
                assert mine is not None
                stolen_state = dict(p.split("=", 1) for p in query.split("&"))["state"]
                elsewhere.cookies.set(FLOW_COOKIE, Flow(stolen_state, mine.nonce, mine.verifier, mine.started).cookie(),
                                      domain="127.0.0.1", path="/sign-in")
                refused["code with another verifier"] = (
                    await elsewhere.get(f"{base}/sign-in/callback?{query}")).status_code
            issuer.wrong_nonce = True
            async with httpx.AsyncClient(timeout=10) as browser:
                refused["another nonce"] = (await _walk(browser, base)).status_code
            issuer.wrong_nonce = False
            issuer.user = {"tenant": tenant, "realm_access": {"roles": ["integration"]}}
            async with httpx.AsyncClient(timeout=10) as browser:
                refused["a role without the dashboard"] = (await _walk(browser, base)).status_code
                assert (await browser.get(f"{base}/api/v1/alerts")).status_code == 401, "no session was opened"
            async with httpx.AsyncClient(timeout=10) as browser:
                refused["the provider said no"] = (await browser.get(
                    f"{base}/sign-in/callback", params={"error": "access_denied", "state": "x"})).status_code
            assert refused == dict.fromkeys(refused, 401), refused

            admin_token = issuer.sign({"tenant": tenant, "realm_access": {"roles": ["admin"]}})
            async with client(base, admin_token) as admin:
                trail = (await admin.get("/api/v1/audit", params={"action": "sign_in", "limit": 50})).json()
            told = sorted(e["detail"] or "ok" for e in trail["entries"] if e["credential"] == "oidc")
            assert told == ["ok", "role_not_allowed"], "the tenant's trail has the sign-ins it can trust"
        engine = create_engine(database_url)
        try:
            async with session_factory(engine)() as session:
                untrusted = (await session.execute(select(AuditRow.detail).where(
                    AuditRow.credential == "oidc", AuditRow.tenant.is_(None)))).scalars().all()
        finally:
            await engine.dispose()
        assert {"state_mismatch", "no_flow", "nonce_mismatch", "provider_refused", "exchange_refused:400"} <= set(
            untrusted), "refusals where nobody could be trusted are kept too, under no tenant"


async def _sign_out(http: httpx.AsyncClient, base: str) -> httpx.Response:
    """Sign out as the page's button does: the form's POST with the session's CSRF token."""
    page = await http.get(f"{base}/")
    assert page.status_code == 200
    csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    return await http.post(f"{base}/sign-out", data={"csrf_token": csrf})


@pytest.mark.nats
@pytest.mark.parametrize("names_end_session", [True, False], ids=["provider-ends-it-too", "provider-names-no-way"])
async def test_sign_out_ends_the_session_at_the_provider_where_it_names_an_end_session_endpoint(
    sqlite_databases: Any, nats_url: str, tenant: str, key_file: Path, names_end_session: bool
) -> None:
    database_url = await sqlite_databases.sqlite()
    async with issuing() as issuer:
        issuer.user = {"tenant": tenant, "realm_access": {"roles": ["lead"]}}
        issuer.end_session = names_end_session
        settings = gateway_settings(database_url, key_file, oidc_issuer=issuer.url, oidc_audience=AUDIENCE,
                                    oidc_role_claim="realm_access.roles", oidc_client_id=CLIENT_ID,
                                    gateway_public_url=PUBLIC_URL)
        async with serving(settings, nats_url) as base:
            async with httpx.AsyncClient(timeout=10) as browser:
                assert (await _walk(browser, base)).status_code == 303
                page = await browser.get(f"{base}/")
                origin = issuer.url.removesuffix("/realms/clinic")
                # the page's forms may redirect to the provider (browsers hold a form's redirects to form-action)
                assert f"form-action 'self' {origin};" in page.headers["content-security-policy"]
                out = await _sign_out(browser, base)
                assert out.status_code == 303
                assert (await browser.get(f"{base}/api/v1/alerts")).status_code == 401, "Rapport's session is gone"
                if not names_end_session:
                    assert out.headers["location"] == "/signed-out" and issuer.sign_outs == []
                else:
                    ending = urlsplit(out.headers["location"])
                    assert f"{ending.scheme}://{ending.netloc}{ending.path}" == \
                        f"{issuer.url}/protocol/openid-connect/logout"
                    asked = {k: v[0] for k, v in parse_qs(ending.query).items()}
                    assert asked == {"id_token_hint": issuer.id_tokens[-1], "client_id": CLIENT_ID,
                                     "post_logout_redirect_uri": f"{PUBLIC_URL}/signed-out"}
                    back = await browser.get(out.headers["location"])  # the provider ends its own, and sends back
                    assert (back.status_code, back.headers["location"]) == (302, f"{PUBLIC_URL}/signed-out")
                    assert issuer.sign_outs == [asked]

            admin_token = issuer.sign({"tenant": tenant, "realm_access": {"roles": ["admin"]}})
            async with client(base, admin_token) as admin:
                trail = (await admin.get("/api/v1/audit", params={"action": "sign_out"})).json()["entries"]
            assert [(e["outcome"], e["detail"]) for e in trail] == [
                (303, "at_provider" if names_end_session else None)]
