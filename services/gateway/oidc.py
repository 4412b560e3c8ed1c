"""Bearer tokens from the clinic's identity provider: JWTs verified against an OIDC issuer's JWKS.

`RAPPORT_OIDC_ISSUER` names the issuer; its keys come from `<issuer>/.well-known/openid-configuration`
-> `jwks_uri` (or `RAPPORT_OIDC_JWKS_URL`), fetched at the first token, not at start, so the gateway
starts while the provider is down. Keys are kept by `kid`; a token naming a `kid` not held makes
one refetch (a key rotation), at most every `REFRESH_SECONDS`, so a flood of made-up kids cannot
turn into a flood of requests to the provider. Kept keys stay in use when a refetch fails; while
none is held (the provider was down from the start) callers get 503 and each request tries again.

The claims are read by `principal_from` with configurable names (`RAPPORT_OIDC_TENANT_CLAIM`,
`..._ROLE_CLAIM`, `..._CLINICIAN_CLAIM`), dotted for nested claims: Keycloak puts realm roles at
`realm_access.roles`, Entra app roles at `roles`, Okta groups at `groups`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from rapport.services.gateway.tokens import LEEWAY_SECONDS, ClaimNames, InvalidToken, Principal, principal_from

REFRESH_SECONDS = 30.0
FETCH_TIMEOUT_SECONDS = 5.0
ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})


class IssuerUnavailable(Exception):
    """The issuer's keys could not be fetched and none are held: no token can be judged now."""


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


@dataclass
class OidcVerifier:
    issuer: str
    audience: str
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    names: ClaimNames = field(default_factory=ClaimNames)
    jwks_url: str | None = None
    _keys: dict[str, Any] = field(default_factory=dict)
    _discovered: dict[str, Any] | None = None
    _fetched_at: float = float("-inf")
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        unknown = set(self.algorithms) - ASYMMETRIC
        if unknown:
            # a shared-secret algorithm would let anyone holding a public key sign as the issuer
            raise ValueError(f"RAPPORT_OIDC_ALGORITHMS: only asymmetric algorithms, not {', '.join(sorted(unknown))}")

    async def verify(self, token: str) -> Principal:
        return principal_from(await self.claims(token, self.audience), self.names)

    async def claims(self, token: str, audience: str) -> dict[str, Any]:
        """The claims of a token this issuer signed for `audience` (an access token for Rapport's
        audience; an ID token for the sign-in client's id), or InvalidToken."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise InvalidToken(type(error).__name__) from None
        kid, algorithm = header.get("kid"), header.get("alg")
        if algorithm not in self.algorithms:
            raise InvalidToken("algorithm not allowed")
        key = await self._key(kid if isinstance(kid, str) else None)
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=list(self.algorithms), audience=audience, issuer=self.issuer,
                leeway=LEEWAY_SECONDS, options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as error:
            raise InvalidToken(type(error).__name__) from None
        return claims

    async def discovery(self) -> dict[str, Any]:
        """The issuer's discovery document (kept once read), or IssuerUnavailable."""
        if self._discovered is None:
            try:
                async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False) as http:
                    answer = await http.get(discovery_url(self.issuer))
                    answer.raise_for_status()
                    document = answer.json()
            except (httpx.HTTPError, ValueError) as error:
                raise IssuerUnavailable(type(error).__name__) from None
            if not isinstance(document, dict) or document.get("issuer") != self.issuer:
                raise IssuerUnavailable("the discovery document names another issuer")
            self._discovered = document
        return self._discovered

    async def _key(self, kid: str | None) -> Any:
        found = self._held(kid)
        if found is not None:
            return found
        async with self._lock:
            found = self._held(kid)
            # with no key held nothing can verify, so each request may try (one at a time, under the lock)
            if found is None and (not self._keys or time.monotonic() - self._fetched_at >= REFRESH_SECONDS):
                await self._refresh()
                found = self._held(kid)
        if found is None:
            raise InvalidToken("no such signing key")
        return found

    def _held(self, kid: str | None) -> Any:
        if kid is None:  # a token without a kid: only unambiguous when the issuer has one key
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        self._fetched_at = time.monotonic()
        try:
            url = self.jwks_url or str((await self.discovery())["jwks_uri"])
            async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False) as http:
                answer = await http.get(url)
                answer.raise_for_status()
                keys = _signing_keys(answer.json())
        except (httpx.HTTPError, ValueError, KeyError, TypeError, IssuerUnavailable) as error:
            if not self._keys:
                raise IssuerUnavailable(type(error).__name__) from None
            return  # keep what is held: a token signed with a held key still verifies
        self._keys = keys


def _signing_keys(document: Mapping[str, Any]) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    for n, entry in enumerate(document["keys"]):
        if entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK.from_json(json.dumps(entry))
        except jwt.PyJWTError:
            continue  # a key type this library cannot use: the others still count
        keys[str(entry.get("kid", f"#{n}"))] = key.key
    return keys
