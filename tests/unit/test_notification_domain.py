"""Notification delivery's pure parts: Standard Webhooks secrets and signatures (checked with the
spec's reference library), which targets a notification goes to, what a try came to and when the
next is due, and the e-mail's words. Synthetic people only."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from rapport.services.gateway.notifications.domain import (
    NotifyEvent,
    Scope,
    Target,
    Tried,
    deliveries_for,
    delivery_id,
    email_message,
    fingerprint,
    new_secret,
    payload,
    plan,
    recipients,
    retry_after,
    secret_key,
    signature,
    signed_headers,
    verdict,
)
from rapport.services.gateway.notifications.sender import SmtpRelay
from rapport.shared.contracts.alert import Notification

NOW = datetime(2026, 3, 9, 10, 30, tzinfo=UTC)
WAITS = [5.0, 300.0, 1800.0]


def notification(**overrides: object) -> Notification:
    values: dict[str, object] = {
        "alert_id": "alert-0001", "kind": "alliance_rupture", "severity": "high", "transition": "raised",
        "client_id": "client-0007", "episode_id": "episode-0007-1",
        "headline": "Alliance drop (bond): SRS 31, down from 38 last session",
        "evidence": "SRS 31 on 2026-03-09, previous 38. Rule alliance-drop v1 (Duncan 2003).",
        "prompt": "Ask about the relationship directly: should we explore how today went?", **overrides}
    return Notification.model_validate(values)


def event(clinician: str = "clinician-03", tenant: str = "acme") -> NotifyEvent:
    return NotifyEvent(event_id="5b1e0f0e-0000-4000-8000-000000000001", tenant=tenant, clinician=clinician,
                       time=NOW, notification=notification())


# secrets and signatures


def test_a_secret_is_whsec_and_base64_of_32_random_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(secret_key(secret)) == 32
    assert new_secret() != secret
    assert new_secret(lambda n: b"\x01" * n) == "whsec_" + base64.b64encode(b"\x01" * 32).decode()


def test_what_the_gateway_signs_the_reference_library_verifies_and_a_tampered_body_it_refuses() -> None:
    secret, body = new_secret(), payload(event(), "https://rapport.example")
    timestamp = int(datetime.now(UTC).timestamp())
    headers = signed_headers(secret, "msg-1", timestamp, body)
    assert Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"SRS 31", b"SRS 39"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):  # replayed an hour later: the reference refuses its age
        Webhook(secret).verify(body, signed_headers(secret, "msg-1", timestamp - 3600, body))


def test_the_signature_is_v1_and_the_hmac_of_id_timestamp_and_body_with_the_decoded_secret() -> None:
    import hashlib
    import hmac

    secret = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    expected = hmac.new(bytes(range(32)), b"msg-1.1674087231.{}", hashlib.sha256).digest()
    assert signature(secret, "msg-1", 1674087231, b"{}") == "v1," + base64.b64encode(expected).decode()


def test_a_secret_that_is_not_whsec_or_too_short_is_refused() -> None:
    with pytest.raises(ValueError):
        secret_key("sk_" + base64.b64encode(bytes(32)).decode())
    with pytest.raises(ValueError):
        secret_key("whsec_" + base64.b64encode(bytes(16)).decode())


def test_the_fingerprint_tells_secrets_apart_without_showing_them() -> None:
    one, other = new_secret(), new_secret()
    assert fingerprint(one) != fingerprint(other)
    assert fingerprint(one) not in one and len(fingerprint(one)) == 16


def test_the_webhook_id_is_the_same_for_the_same_event_and_endpoint_and_has_no_dot() -> None:
    first = delivery_id("webhook", "acme", "event-1", "endpoint-1")
    assert first == delivery_id("webhook", "acme", "event-1", "endpoint-1")
    assert first != delivery_id("webhook", "acme", "event-1", "endpoint-2")
    assert first != delivery_id("webhook", "beta", "event-1", "endpoint-1")
    assert first != delivery_id("email", "acme", "event-1", "endpoint-1")
    assert "." not in first and len(first) == 36


# which targets a notification goes to


def test_a_notification_goes_to_its_clinicians_targets_and_the_tenants_team_targets_only() -> None:
    own = Target("t1", "acme", "webhook", "clinician-03")
    team = Target("t2", "acme", "email", None)
    colleague = Target("t3", "acme", "webhook", "clinician-04")
    elsewhere = Target("t4", "beta", "webhook", "clinician-03")
    elsewhere_team = Target("t5", "beta", "webhook", None)
    targets = [own, team, colleague, elsewhere, elsewhere_team]
    assert recipients(targets, "acme", "clinician-03") == [own, team]
    assert recipients(targets, "acme", "clinician-99") == [team]
    assert [d.target_id for d in deliveries_for(event(), targets, "https://r.example")] == ["t1", "t2"]


def test_every_delivery_of_one_event_carries_the_same_payload_with_the_alert_link_and_no_responses() -> None:
    [delivery] = deliveries_for(event(), [Target("t1", "acme", "webhook", None)], "https://rapport.example/")
    document = json.loads(delivery.payload)
    assert document["type"] == "rapport.notify.sent.v1"
    assert document["alert_url"] == "https://rapport.example/alerts/alert-0001"
    assert document["data"]["headline"].startswith("Alliance drop (bond)")
    assert document["tenant"] == "acme" and document["clinician_id"] == "clinician-03"
    assert "responses" not in delivery.payload.decode()
    assert delivery.id == delivery_id("webhook", "acme", event().event_id, "t1")


def test_an_admin_sees_the_tenants_targets_and_a_clinician_only_their_own() -> None:
    admin, clinician = Scope("acme", None), Scope("acme", "clinician-03")
    assert admin.sees("acme", None) and admin.sees("acme", "clinician-04")
    assert clinician.sees("acme", "clinician-03")
    assert not clinician.sees("acme", "clinician-04") and not clinician.sees("acme", None)
    assert not admin.sees("beta", None) and not clinician.sees("beta", "clinician-03")


# what a try came to


@pytest.mark.parametrize(("tried", "expected"), [
    (Tried(200), "delivered"), (Tried(204), "delivered"),
    (Tried(500), "retry"), (Tried(502), "retry"), (Tried(503), "retry"), (Tried(408), "retry"), (Tried(429), "retry"),
    (Tried(error="timeout"), "retry"), (Tried(error="connection"), "retry"),
    (Tried(400), "rejected"), (Tried(401), "rejected"), (Tried(404), "rejected"), (Tried(410), "rejected"),
    (Tried(301), "rejected"), (Tried(error="invalid_url"), "rejected"), (Tried(error="target_gone"), "rejected"),
])
def test_a_webhook_try_is_delivered_on_2xx_retried_on_timeouts_5xx_408_429_and_refused_otherwise(
    tried: Tried, expected: str
) -> None:
    assert verdict("webhook", tried) == expected


@pytest.mark.parametrize(("tried", "expected"), [
    (Tried(250), "delivered"), (Tried(421), "retry"), (Tried(451), "retry"), (Tried(550), "rejected"),
    (Tried(535), "rejected"), (Tried(error="timeout"), "retry"), (Tried(error="not_configured"), "rejected"),
])
def test_an_email_try_follows_smtp_reply_codes(tried: Tried, expected: str) -> None:
    assert verdict("email", tried) == expected


def test_the_waits_grow_with_each_try_and_the_try_after_the_last_wait_is_the_last() -> None:
    failing = Tried(503)
    dues = [plan("webhook", attempt, failing, WAITS, NOW).next_attempt_at for attempt in (1, 2, 3)]
    assert dues == [NOW + timedelta(seconds=5), NOW + timedelta(seconds=300), NOW + timedelta(seconds=1800)]
    assert {plan("webhook", a, failing, WAITS, NOW).status for a in (1, 2, 3)} == {"pending"}
    last = plan("webhook", 4, failing, WAITS, NOW)
    assert (last.status, last.outcome, last.next_attempt_at) == ("dead", "dead", None)


def test_a_refused_try_is_not_tried_again_and_a_delivered_one_is_done() -> None:
    assert plan("webhook", 1, Tried(400), WAITS, NOW) == plan("webhook", 1, Tried(400), WAITS, NOW)
    refused = plan("webhook", 1, Tried(400), WAITS, NOW)
    assert (refused.status, refused.outcome, refused.next_attempt_at) == ("rejected", "rejected", None)
    assert plan("webhook", 3, Tried(200), WAITS, NOW).status == "delivered"


def test_jitter_lengthens_a_wait_by_at_most_a_tenth_and_retry_after_is_honoured_up_to_the_longest_wait() -> None:
    assert plan("webhook", 1, Tried(503), WAITS, NOW, jitter=1.0).next_attempt_at == NOW + timedelta(seconds=5.5)
    slow_down = Tried(429, retry_after_seconds=120)
    assert plan("webhook", 1, slow_down, WAITS, NOW).next_attempt_at == NOW + timedelta(seconds=120)
    forever = Tried(503, retry_after_seconds=10 ** 9)
    assert plan("webhook", 1, forever, WAITS, NOW).next_attempt_at == NOW + timedelta(seconds=1800)
    assert retry_after("120", NOW) == 120 and retry_after(None, NOW) is None
    assert retry_after("Mon, 09 Mar 2026 10:31:30 GMT", NOW) == 90  # an HTTP date: seconds from now
    assert retry_after("Mon, 09 Mar 2026 10:00:00 GMT", NOW) == 0 and retry_after("soon", NOW) is None


def test_no_waits_means_one_try() -> None:
    assert plan("webhook", 1, Tried(error="timeout"), [], NOW).status == "dead"


# the e-mail


def test_the_email_carries_the_headline_evidence_prompt_and_link_and_nothing_of_the_submission() -> None:
    body = payload(event(), "https://rapport.example")
    message = email_message(body, to="therapist@clinic.example", sender="rapport@clinic.example",
                            message_id="d-1", now=NOW)
    text = message.get_content()
    assert message["Subject"] == "Rapport: Alliance drop (bond): SRS 31, down from 38 last session"
    assert message["To"] == "therapist@clinic.example" and message["Message-ID"] == "<d-1@rapport>"
    assert message.get_content_type() == "text/plain"
    assert "Alliance drop (bond): SRS 31, down from 38 last session" in text
    assert "Evidence: SRS 31 on 2026-03-09, previous 38." in text
    assert "For the next session: Ask about the relationship directly" in text
    assert "Open the alert: https://rapport.example/alerts/alert-0001" in text
    assert "Client client-0007, episode episode-0007-1. Alert: alliance rupture, severity high, raised." in text


def test_an_email_without_a_prompt_says_none() -> None:
    quiet = NotifyEvent(event_id="e", tenant="acme", clinician="c", time=NOW, notification=notification(prompt=None))
    text = email_message(payload(quiet, "https://r.example"), to="a@b.example", sender="r@b.example",
                         message_id="d", now=NOW).get_content()
    assert "For the next session" not in text


def test_the_smtp_url_names_the_relay_tls_and_credentials() -> None:
    assert SmtpRelay.from_url("smtp://127.0.0.1:2525") == SmtpRelay("127.0.0.1", 2525, False, None, None)
    assert SmtpRelay.from_url("smtps://user%40clinic:p%3Ass@mail.clinic.example") == SmtpRelay(
        "mail.clinic.example", 465, True, "user@clinic", "p:ss")
    with pytest.raises(ValueError):
        SmtpRelay.from_url("http://mail.example")


def test_during_a_changeover_a_receiver_holding_either_secret_verifies_and_after_it_only_the_new() -> None:
    """A rotation's two signatures, the new secret's first, space-separated (Standard Webhooks allows
    several); the replaced secret signs while the changeover lasts and not a moment after."""
    from rapport.services.gateway.notifications.domain import SECRET_ROTATION_GRACE, still_signing

    old, new, body = new_secret(), new_secret(), payload(event(), "https://rapport.example")
    timestamp = int(datetime.now(UTC).timestamp())
    headers = signed_headers(new, "msg-1", timestamp, body, previous=old)
    assert headers["webhook-signature"].split(" ") == [signature(new, "msg-1", timestamp, body),
                                                       signature(old, "msg-1", timestamp, body)]
    assert Webhook(old).verify(body, headers) == Webhook(new).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    assert timedelta(hours=24) == SECRET_ROTATION_GRACE
    until = NOW + SECRET_ROTATION_GRACE
    assert still_signing(old, until, NOW) == old
    assert still_signing(old, until, until - timedelta(seconds=1)) == old
    assert still_signing(old, until, until) is None
    assert still_signing(None, None, NOW) is None
    alone = signed_headers(new, "msg-1", timestamp, body, previous=still_signing(old, until, until))
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body, alone)
