"""Sign-in links as the gateway reads them, without a server: a link names the principal it was
minted for; an expired one is refused with its claims still known (for the audit row); a bearer
token, a link from another stack, a link minted for hours, and an edited one are refused with
nothing believed. The CSRF token is the session's own; paging cursors round-trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rapport.services.gateway.audit import cursor_for, id_from_cursor
from rapport.services.gateway.signin import LINK_MAX_TTL, LinkRefused, csrf_token_for, mint_link, read_link
from rapport.services.gateway.tokens import Principal, mint

KEY = Ed25519PrivateKey.generate()
NOW = datetime.now(UTC)


def refusal(token: str) -> LinkRefused:
    with pytest.raises(LinkRefused) as refused:
        read_link(token, KEY.public_key(), "rapport", NOW)
    return refused.value


def test_a_link_names_the_clinician_it_was_minted_for() -> None:
    link = read_link(mint_link(KEY, tenant="acme", role="clinician", clinician="clin-03", audience="rapport", now=NOW),
                     KEY.public_key(), "rapport", NOW)
    assert link.principal == Principal(tenant="acme", role="clinician", subject="clin-03", clinician="clin-03")
    assert link.jti and timedelta(minutes=9) < link.expires_at - NOW <= timedelta(minutes=10)


def test_an_expired_link_is_refused_but_its_claims_are_kept_for_the_audit_row() -> None:
    refused = refusal(mint_link(KEY, tenant="acme", role="lead", audience="rapport", now=NOW - timedelta(minutes=20)))
    assert refused.code == "link_expired"
    assert refused.principal == Principal(tenant="acme", role="lead", subject="lead@acme")
    early = mint_link(KEY, tenant="acme", role="lead", audience="rapport", now=NOW + timedelta(minutes=5))
    assert refusal(early).code == "link_not_yet_valid"
    just_in_time = mint_link(KEY, tenant="acme", role="lead", audience="rapport", now=NOW - timedelta(minutes=10))
    assert read_link(just_in_time, KEY.public_key(), "rapport", NOW).principal.role == "lead"  # within the leeway


def test_bearer_tokens_foreign_links_long_links_and_edited_links_are_refused_with_nothing_believed() -> None:
    bearer = mint(KEY, tenant="acme", role="admin", audience="rapport", now=NOW, ttl=timedelta(minutes=5))
    assert refusal(bearer).code == "not_a_link"
    foreign = mint_link(Ed25519PrivateKey.generate(), tenant="acme", role="admin", audience="rapport", now=NOW)
    assert (refusal(foreign).code, refusal(foreign).principal) == ("link_invalid", None)
    header, payload, signature = mint_link(KEY, tenant="acme", role="lead", audience="rapport", now=NOW).split(".")
    edited = jwt.utils.base64url_encode(jwt.utils.base64url_decode(payload).replace(b'"lead"', b'"admin"')).decode()
    assert refusal(f"{header}.{edited}.{signature}").code == "link_invalid"
    long = mint(KEY, tenant="acme", role="lead", audience="rapport:sign-in", now=NOW, ttl=timedelta(hours=2))
    assert refusal(long).code == "link_too_long"
    with pytest.raises(ValueError, match="at most"):
        mint_link(KEY, tenant="acme", role="lead", audience="rapport", now=NOW, ttl=LINK_MAX_TTL * 2)
    with pytest.raises(ValueError, match="clinician"):
        mint_link(KEY, tenant="acme", role="clinician", audience="rapport", now=NOW)


def test_each_session_has_its_own_csrf_token_and_cursors_round_trip() -> None:
    assert csrf_token_for("a" * 43) != csrf_token_for("b" * 43)
    assert csrf_token_for("a" * 43) == csrf_token_for("a" * 43)
    assert id_from_cursor(cursor_for(12345)) == 12345
    with pytest.raises(ValueError):
        id_from_cursor("not-a-cursor")
