"""The gate's memory of verified tokens: an integration engine's one token is checked once, taken
again until the sooner of its exp and a minute, and a token that failed is never remembered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rapport.services.gateway.http import Gate
from rapport.services.gateway.tokens import InvalidToken, Principal, SigningKeyVerifier, mint


class CountingVerifier:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.real = SigningKeyVerifier(key.public_key(), audience="rapport")
        self.calls = 0

    async def verify(self, token: str) -> Principal:
        self.calls += 1
        return await self.real.verify(token)


async def test_a_token_is_verified_once_and_taken_again_until_it_expires() -> None:
    key = Ed25519PrivateKey.generate()
    verifier = CountingVerifier(key)
    gate = Gate(verifier, lambda: 1024)
    now = datetime.now(UTC)
    long_lived = mint(key, tenant="acme", role="integration", audience="rapport", now=now, ttl=timedelta(hours=1))
    first = await gate._verify(long_lived)
    assert (first.tenant, first.role) == ("acme", "integration")
    assert await gate._verify(long_lived) == first
    assert verifier.calls == 1

    # already past its exp (inside the verifier's leeway): verified every time, never remembered past exp
    lapsed = mint(key, tenant="acme", role="integration", audience="rapport", now=now - timedelta(seconds=70),
                  ttl=timedelta(seconds=60))
    await gate._verify(lapsed)
    await gate._verify(lapsed)
    assert verifier.calls == 3

    forged = mint(Ed25519PrivateKey.generate(), tenant="acme", role="integration", audience="rapport", now=now,
                  ttl=timedelta(hours=1))
    for _ in range(2):
        with pytest.raises(InvalidToken):
            await gate._verify(forged)
    assert verifier.calls == 5
