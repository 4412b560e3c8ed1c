"""Bearer tokens: who is calling, for which tenant, in which role.

A token is a JWT. Its claims carry the tenant (the only place the gateway takes a tenant from), the
role and, for a clinician, their id. Two ways to trust one, behind one `TokenVerifier` face:

- the embedded signing key (`SigningKeyVerifier`): an Ed25519 key in the data dir, mode 0600,
  created by `rapport up` (or the first `rapport token`); `rapport token` signs with it. For a
  stack with no identity provider.
- an OIDC issuer's JWKS (`RAPPORT_OIDC_ISSUER`, oidc.py): the clinic's identity provider signs,
  the same claims are read (`ClaimNames`, dotted for nested claims, so Keycloak-, Entra- or
  Okta-shaped tokens map onto them).

Every way a token can be wrong raises `InvalidToken` with the kind of fault for the log; the caller
answers 401 with nothing but the standard `WWW-Authenticate`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from rapport.shared.contracts.tenancy import SUBJECT_TOKEN_PATTERN, is_tenant_id
from rapport.shared.settings import Settings

ROLES = ("integration", "clinician", "lead", "admin")
EMBEDDED_ISSUER = "rapport-embedded"
ALGORITHM = "EdDSA"
MAX_TTL = timedelta(days=30)
# clock skew allowed between whoever minted a token and the gateway
LEEWAY_SECONDS = 30


@dataclass(frozen=True)
class Principal:
    """The caller, as the token says. `role` is None when the token names no role Rapport knows."""

    tenant: str
    role: str | None
    subject: str
    clinician: str | None = None


class InvalidToken(Exception):
    """The token cannot be trusted. The message is the kind of fault, for the log only."""


@dataclass(frozen=True)
class ClaimNames:
    tenant: str = "tenant"
    role: str = "role"
    clinician: str = "clinician"


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> Principal: ...


def claim(claims: Mapping[str, Any], name: str) -> Any:
    """`realm_access.roles` reads claims["realm_access"]["roles"]; a claim whose own name has a dot
    (as some providers' namespaced claims do) is found by that name first."""
    if name in claims:
        return claims[name]
    found: Any = claims
    for part in name.split("."):
        if not isinstance(found, Mapping) or part not in found:
            return None
        found = found[part]
    return found


def principal_from(claims: Mapping[str, Any], names: ClaimNames = ClaimNames()) -> Principal:
    tenant = claim(claims, names.tenant)
    if not isinstance(tenant, str) or not is_tenant_id(tenant):
        raise InvalidToken("no valid tenant claim")
    role = claim(claims, names.role)
    if isinstance(role, list):  # identity providers often give a list of roles: the first Rapport knows
        role = next((r for r in role if r in ROLES), None)
    clinician = claim(claims, names.clinician)
    if clinician is not None and (not isinstance(clinician, str) or not SUBJECT_TOKEN_PATTERN.fullmatch(clinician)):
        raise InvalidToken("invalid clinician claim")
    return Principal(tenant=tenant, role=role if role in ROLES else None, subject=str(claims.get("sub", "")),
                     clinician=clinician)


@dataclass(frozen=True)
class SigningKeyVerifier:
    public_key: Ed25519PublicKey
    audience: str
    issuer: str = EMBEDDED_ISSUER
    names: ClaimNames = ClaimNames()

    async def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token, self.public_key, algorithms=[ALGORITHM], audience=self.audience, issuer=self.issuer,
                leeway=LEEWAY_SECONDS, options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as error:
            raise InvalidToken(type(error).__name__) from None
        return principal_from(claims, self.names)


def verifier_for(settings: Settings) -> TokenVerifier:
    if settings.oidc_issuer:
        from rapport.services.gateway.oidc import OidcVerifier

        names = ClaimNames(tenant=settings.oidc_tenant_claim, role=settings.oidc_role_claim,
                           clinician=settings.oidc_clinician_claim)
        return OidcVerifier(settings.oidc_issuer, settings.oidc_audience, names=names,
                            algorithms=tuple(a.strip() for a in settings.oidc_algorithms.split(",") if a.strip()),
                            jwks_url=settings.oidc_jwks_url)
    path = settings.resolved_token_key_file()
    if not path.exists():
        raise RuntimeError(f"no token signing key at {path}: start the stack with `rapport up`, or run "
                           "`rapport token` once, which create it (or set RAPPORT_TOKEN_KEY_FILE)")
    return SigningKeyVerifier(load_signing_key(path).public_key(), audience=settings.oidc_audience)


# the embedded signing key


def create_signing_key(path: Path) -> bool:
    """Create an Ed25519 key at `path`, readable by its owner only; False if one is there already
    (never replaced: every token minted with it would stop working)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
    finally:
        os.close(fd)
    return True


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise RuntimeError(f"{path} is not an Ed25519 private key")
    return key


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short thumbprint, so a verifier holding several keys (a rotation, a JWKS) can pick one."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest()[:12]).decode().rstrip("=")


def mint(key: Ed25519PrivateKey, *, tenant: str, role: str, audience: str, now: datetime, ttl: timedelta,
         clinician: str | None = None, issuer: str = EMBEDDED_ISSUER) -> str:
    if not is_tenant_id(tenant):
        raise ValueError(f"tenant {tenant!r}: expected [a-z0-9_-]{{1,64}}")
    if role not in ROLES:
        raise ValueError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    if clinician is not None and not SUBJECT_TOKEN_PATTERN.fullmatch(clinician):
        raise ValueError("clinician id: expected [A-Za-z0-9_-]{1,128}")
    if role == "clinician" and clinician is None:
        raise ValueError("a clinician's token needs --clinician ID (they see only their own clients)")
    if not timedelta(0) < ttl <= MAX_TTL:
        raise ValueError(f"ttl: expected more than 0 and at most {MAX_TTL.days} days")
    claims: dict[str, Any] = {
        "iss": issuer, "aud": audience, "sub": clinician or f"{role}@{tenant}", "tenant": tenant, "role": role,
        "iat": int(now.timestamp()), "exp": int((now + ttl).timestamp()), "jti": str(uuid.uuid4()),
    }
    if clinician is not None:
        claims["clinician"] = clinician
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": key_id(key.public_key())})


def parse_ttl(text: str) -> timedelta:
    """`90s`, `30m`, `1h`, `7d`."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit():
        raise ValueError(f"ttl {text!r}: expected a number and s, m, h or d (30m, 1h, 7d)")
    return timedelta(seconds=int(number) * units[unit])
