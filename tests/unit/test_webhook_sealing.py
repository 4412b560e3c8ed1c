"""Webhook secrets sealed at rest (services/gateway/notifications/sealing.py): AES-GCM under a key kept
in a file outside the database; what another key sealed, or a changed byte, does not open; the key
file is made once, 0600, and never made where an operator named one."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from rapport.services.gateway.notifications.domain import new_secret
from rapport.services.gateway.notifications.sealing import (
    SEALED_PREFIX,
    Sealer,
    SecretsKeyMissing,
    load_or_create_key,
    new_key_text,
)


def key() -> bytes:
    return base64.b64decode(new_key_text())


def test_a_sealed_secret_opens_with_its_key_only_and_fits_the_column() -> None:
    secret, sealer = new_secret(), Sealer(key())
    sealed = sealer.seal(secret)
    assert sealed.startswith(SEALED_PREFIX) and len(sealed) <= 100
    assert secret.removeprefix("whsec_") not in sealed
    assert sealer.open(sealed) == secret
    assert sealer.seal(secret) != sealed  # a fresh nonce each time
    assert Sealer(key()).open(sealed) is None
    tampered = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    assert sealer.open(tampered) is None
    assert sealer.open(SEALED_PREFIX + "not base64!") is None
    with pytest.raises(ValueError):
        sealer.seal("sk_live_not_a_webhook_secret")


def test_the_key_file_is_made_once_with_mode_0600_where_no_file_was_named(tmp_path: Path) -> None:
    path = tmp_path / "data" / "webhook-secrets.key"
    made = load_or_create_key(path, create=True)
    assert len(made) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path, create=True) == made == load_or_create_key(path, create=False)


def test_a_named_key_file_that_is_missing_or_no_key_stops_the_gateway(tmp_path: Path) -> None:
    with pytest.raises(SecretsKeyMissing, match="does not exist"):
        load_or_create_key(tmp_path / "restored.key", create=False)
    assert not (tmp_path / "restored.key").exists()
    for text in ("not base64 at all!", base64.b64encode(b"short").decode()):
        (tmp_path / "bad.key").write_text(text)
        with pytest.raises(SecretsKeyMissing):
            load_or_create_key(tmp_path / "bad.key", create=True)
