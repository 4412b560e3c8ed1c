"""Webhook secrets sealed at rest: the database holds each secret encrypted with a key kept outside it.

Signing needs the secret itself (a hash could not sign), so it must be stored; sealed, a copy of the
database or of its backups no longer lets anyone forge Rapport's notifications. AES-256-GCM (the
`cryptography` package's AESGCM) with a random 96-bit nonce per seal, over the secret's 32 raw
bytes: `sealed1:` + base64(nonce + ciphertext + tag), 88 characters, within the column's 100.

The key: 32 random bytes, base64 in a file (`RAPPORT_SECRETS_KEY_FILE`, mode 0600), which must
exist: a gateway never makes a key an operator named, because a new key cannot open what the old one
sealed, and every replica must read the same key. Unset, the embedded stack (its token key in the
data dir and no identity provider: the layout `rapport up` makes) gets `<data dir>/webhook-secrets.key`,
made at the gateway's first start; any other gateway stores the secrets unsealed and warns at start
(a key made per replica, in a directory each has of its own, would leave each unable to sign what
another sealed).

`SealedSecret` is the column type: Python code reads and writes the secret (`whsec_…`) and the
column stores it sealed. The key is the process's (`use_key`, called once by the gateway's wiring:
one process serves one gateway); without one (a gateway with no key, a test writing rows directly)
secrets are stored as given and read back as they are. A secret stored before sealing (`whsec_…`
in the column) is read as it is and sealed by the sender's first pass (`NotificationSender`). One
that cannot be opened (another key, or the key was lost) reads as `UNREADABLE` (""): it signs
nothing (its tries are `secret_unreadable`), and a rotation gives the endpoint a new secret.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import String
from sqlalchemy.types import TypeDecorator

from rapport.services.gateway.notifications.domain import SECRET_PREFIX
from rapport.shared.settings import Settings

log = logging.getLogger("rapport.gateway.notifications")

SEALED_PREFIX = "sealed1:"
KEY_BYTES = 32
NONCE_BYTES = 12
# binds a sealed value to what it is, so nothing else sealed with the key can stand in for it
ASSOCIATED = b"rapport/webhook-secret/v1"
UNREADABLE = ""
DEFAULT_KEY_NAME = "webhook-secrets.key"


class SecretsKeyMissing(Exception):
    """The key file an operator named does not exist or is not a key (the gateway does not start)."""


def load_or_create_key(path: Path, *, create: bool) -> bytes:
    """The key in `path`; made there (mode 0600, parents 0700) when it is missing and `create`. Two
    processes making it at once agree: the second reads the first's."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        if not create:
            raise SecretsKeyMissing(f"RAPPORT_SECRETS_KEY_FILE names {path}, which does not exist; restore the "
                                    "key the webhook secrets were sealed with") from None
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = secrets.token_bytes(KEY_BYTES)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_or_create_key(path, create=False)
        with os.fdopen(descriptor, "w") as file:
            file.write(base64.b64encode(key).decode() + "\n")
        log.warning("made a new key for the webhook secrets at %s: back it up with the database; secrets sealed "
                    "with another key cannot be read with it", path)
        return key
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SecretsKeyMissing(f"{path} does not hold a base64 key") from None
    if len(key) != KEY_BYTES:
        raise SecretsKeyMissing(f"{path} does not hold a {KEY_BYTES}-byte key")
    return key


def key_for(settings: Settings) -> bytes | None:
    """The gateway's key, as the module's words say; None: secrets are stored unsealed."""
    if settings.secrets_key_file is not None:
        return load_or_create_key(settings.secrets_key_file, create=False)
    if settings.token_key_file is None and settings.oidc_issuer is None:  # the embedded stack's data dir
        return load_or_create_key(settings.data_dir / DEFAULT_KEY_NAME, create=True)
    log.warning("RAPPORT_SECRETS_KEY_FILE is not set: webhook secrets are stored unsealed in the database; "
                "name a key file (32 random bytes, base64) every gateway replica reads to seal them")
    return None


def new_key_text() -> str:
    """A key as the file holds it (for an operator making one: `python -c` or a secret store)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


class Sealer:
    def __init__(self, key: bytes) -> None:
        self._cipher = AESGCM(key)

    def seal(self, secret: str) -> str:
        if not secret.startswith(SECRET_PREFIX):
            raise ValueError("not a whsec_ secret")
        raw = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
        nonce = os.urandom(NONCE_BYTES)
        return SEALED_PREFIX + base64.b64encode(nonce + self._cipher.encrypt(nonce, raw, ASSOCIATED)).decode()

    def open(self, stored: str) -> str | None:
        """The secret, or None when this key cannot open it."""
        try:
            blob = base64.b64decode(stored[len(SEALED_PREFIX):], validate=True)
            raw = self._cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], ASSOCIATED)
        except (InvalidTag, binascii.Error, ValueError):
            return None
        return SECRET_PREFIX + base64.b64encode(raw).decode()


_sealer: Sealer | None = None


def use_key(key: bytes | None) -> None:
    """The process's key for `SealedSecret` columns (None: store as given)."""
    global _sealer
    _sealer = Sealer(key) if key is not None else None


def is_sealed(stored: str | None) -> bool:
    return stored is not None and stored.startswith(SEALED_PREFIX)


def sealing() -> bool:
    return _sealer is not None


def opens(stored: str) -> bool:
    """The process's key opens this sealed value."""
    return _sealer is not None and _sealer.open(stored) is not None


class SealedSecret(TypeDecorator[str]):
    """A `whsec_` secret in Python, sealed in the column (a String(100) to the database)."""

    impl = String(100)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        if value is None or value == UNREADABLE or _sealer is None or is_sealed(value):
            return value
        return _sealer.seal(value)

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        if value is None or not is_sealed(value):
            return value
        opened = _sealer.open(value) if _sealer is not None else None
        return UNREADABLE if opened is None else opened
