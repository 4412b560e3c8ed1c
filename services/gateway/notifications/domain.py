"""What notification delivery decides, as plain functions over plain data: no session, no socket, no
clock (time is passed in).

Webhooks follow the Standard Webhooks specification (standardwebhooks.com, spec v1.0.0):
- the secret is random bytes shown as `whsec_` + base64 (at least 24 bytes; Rapport makes 32), one
  per endpoint;
- the signed content is `{webhook-id}.{webhook-timestamp}.{body}`, HMAC-SHA256 with the secret's
  decoded bytes, sent as `webhook-signature: v1,<base64>`;
- a secret is rotated with a changeover: for `SECRET_ROTATION_GRACE` after a rotation each try
  carries two signatures, the new secret's first, space-separated in `webhook-signature` (the spec
  allows several, so a receiver verifies with whichever secret it holds), then the new one's only;
- `webhook-id` is the same on every retry of one event to one endpoint (the receiver's idempotency
  key), `webhook-timestamp` is the attempt's (integer seconds), so a receiver refuses replays by age;
- 2xx is delivered; a timeout, a connection failure, 5xx, 408 and 429 are tried again after a
  growing wait (`Retry-After`, in seconds or as a date, honoured up to the longest wait); any other
  answer (3xx included: redirects are not followed) is the receiver refusing it, recorded and not
  tried again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, Literal

from rapport.shared.contracts.alert import Notification
from rapport.shared.contracts.envelope import derived_event_id

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
# after a rotation, how long tries are signed with the replaced secret too: a day for the clinic's IT
# to put the new secret where the receiver reads it (a Rapport default, not from the spec)
SECRET_ROTATION_GRACE = timedelta(hours=24)
Channel = Literal["webhook", "email"]
CHANNELS: tuple[Channel, ...] = ("webhook", "email")
# what a delivery is: waiting for its next try, or done one way or another
DeliveryStatus = Literal["pending", "delivered", "rejected", "dead"]
# what one attempt came to
Outcome = Literal["delivered", "retried", "rejected", "dead"]
# failures of the transport itself (no answer to judge): tried again
RETRIED_ERRORS = frozenset({"timeout", "connection"})
RETRIED_STATUS = frozenset({408, 429})
WEBHOOK_EVENT_TYPE = "rapport.notify.sent.v1"
EMAIL_ADDRESS = re.compile(r"^[^@\s<>,;\"']{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?$")


# secrets and signatures


def new_secret(random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    return SECRET_PREFIX + base64.b64encode(random_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The bytes a `whsec_` secret stands for (what the HMAC is keyed with)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("not a whsec_ secret")
    key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    if len(key) < 24:
        raise ValueError("a webhook secret has at least 24 bytes")
    return key


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, webhook_id: str, timestamp: int, body: bytes, *,
                   previous: str | None = None) -> dict[str, str]:
    """`previous`: the replaced secret during a changeover, whose signature follows the new one's."""
    signatures = [signature(s, webhook_id, timestamp, body) for s in (secret, previous) if s is not None]
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(signatures), "content-type": "application/json"}


def still_signing(previous: str | None, until: datetime | None, now: datetime) -> str | None:
    """The replaced secret while its changeover lasts, else None."""
    return previous if previous is not None and until is not None and now < until else None


def fingerprint(secret: str) -> str:
    """Tells two secrets apart without showing either (the API shows this, never the secret again)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def delivery_id(channel: Channel, tenant: str, event_id: str, target_id: str) -> str:
    """The webhook-id: derived from the notification event and the target, so a redelivered event,
    a replica or a retry derives the same one. A UUID: 36 characters, no `.` (the spec forbids one)."""
    return derived_event_id(f"delivery-{channel}", tenant, event_id, target_id)


# who may manage which targets, and which targets a notification goes to


@dataclass(frozen=True)
class Scope:
    """Whose targets a caller manages: the tenant's every target (`clinician` None: an admin), or
    only those for one clinician."""

    tenant: str
    clinician: str | None

    def sees(self, tenant: str, clinician_id: str | None) -> bool:
        return tenant == self.tenant and (self.clinician is None or clinician_id == self.clinician)


@dataclass(frozen=True)
class Target:
    """A webhook endpoint or an e-mail subscription. `clinician_id` None: every notification of the
    tenant (a team's endpoint or address, set up by an admin)."""

    id: str
    tenant: str
    channel: Channel
    clinician_id: str | None


def recipients(targets: Iterable[Target], tenant: str, clinician: str) -> list[Target]:
    return [t for t in targets if t.tenant == tenant and t.clinician_id in (None, clinician)]


@dataclass(frozen=True)
class NotifyEvent:
    """One `rapport.<tenant>.notify.<clinician>` event, as delivery needs it."""

    event_id: str
    tenant: str
    clinician: str
    time: datetime
    notification: Notification


def alert_link(public_url: str, alert_id: str) -> str:
    return f"{public_url.rstrip('/')}/alerts/{alert_id}"


def payload(event: NotifyEvent, public_url: str) -> bytes:
    """What a webhook receives (and what an e-mail is written from): the Standard Webhooks payload
    shape (`type`, `timestamp`, `data`), the notification's words and ids, and the alert's link.
    Nothing of the submission: no responses, no item wording."""
    document = {
        "type": WEBHOOK_EVENT_TYPE, "timestamp": event.time.isoformat(), "event_id": event.event_id,
        "tenant": event.tenant, "clinician_id": event.clinician,
        "alert_url": alert_link(public_url, event.notification.alert_id),
        "data": event.notification.model_dump(mode="json"),
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class NewDelivery:
    id: str
    tenant: str
    channel: Channel
    target_id: str
    event_id: str
    alert_id: str
    payload: bytes


def deliveries_for(event: NotifyEvent, targets: Iterable[Target], public_url: str) -> list[NewDelivery]:
    body = payload(event, public_url)
    return [NewDelivery(id=delivery_id(t.channel, event.tenant, event.event_id, t.id), tenant=event.tenant,
                        channel=t.channel, target_id=t.id, event_id=event.event_id,
                        alert_id=event.notification.alert_id, payload=body)
            for t in recipients(targets, event.tenant, event.clinician)]


# what a try came to, and what follows


@dataclass(frozen=True)
class Tried:
    """One attempt's result: the receiver's status code (HTTP, or the SMTP reply code), or the kind
    of failure when there was no answer (`timeout`, `connection`, `invalid_url`, `not_configured`)."""

    status_code: int | None = None
    error: str | None = None
    retry_after_seconds: float | None = None


def verdict(channel: Channel, tried: Tried) -> Literal["delivered", "retry", "rejected"]:
    if tried.error is not None or tried.status_code is None:
        return "retry" if tried.error in RETRIED_ERRORS else "rejected"
    code = tried.status_code
    if channel == "email":  # SMTP: 2xx taken, 4xx a transient refusal, 5xx a permanent one
        return "delivered" if 200 <= code < 300 else "retry" if 400 <= code < 500 else "rejected"
    if 200 <= code < 300:
        return "delivered"
    if code >= 500 or code in RETRIED_STATUS:
        return "retry"
    return "rejected"


@dataclass(frozen=True)
class Next:
    status: DeliveryStatus
    outcome: Outcome
    next_attempt_at: datetime | None


def plan(channel: Channel, attempt: int, tried: Tried, waits: Sequence[float], now: datetime,
         jitter: float = 0.0) -> Next:
    """After try number `attempt` (1 for the first): done, or when the next try is due. There are
    as many retries as waits; `jitter` (0 to 1) lengthens a wait by up to a tenth, so receivers that
    failed together are not all tried again in the same second."""
    match verdict(channel, tried):
        case "delivered":
            return Next("delivered", "delivered", None)
        case "rejected":
            return Next("rejected", "rejected", None)
    if attempt > len(waits):
        return Next("dead", "dead", None)
    wait = waits[attempt - 1] * (1 + 0.1 * jitter)
    if tried.retry_after_seconds is not None:
        wait = max(wait, min(tried.retry_after_seconds, max(waits)))
    return Next("pending", "retried", now + timedelta(seconds=wait))


def retry_after(header: str | None, now: datetime) -> float | None:
    """`Retry-After` (RFC 9110 §10.2.3) as seconds from `now`: a number of seconds, or an HTTP date."""
    if header is None:
        return None
    text = header.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


# the e-mail


def email_message(body: bytes, *, to: str, sender: str, message_id: str, now: datetime) -> EmailMessage:
    """A plain-text e-mail from a webhook payload: the headline, the evidence, the repair prompt and
    the alert's link, with the pseudonymous ids. The payload carries nothing of the submission, so
    neither can this."""
    document: dict[str, Any] = json.loads(body)
    notification = Notification.model_validate(document["data"])
    lines = [notification.headline, "", f"Evidence: {notification.evidence}"]
    if notification.prompt:
        lines += ["", f"For the next session: {notification.prompt}"]
    lines += [
        "", f"Client {notification.client_id}, episode {notification.episode_id}. Alert: "
        f"{notification.kind.replace('_', ' ')}, severity {notification.severity}, {notification.transition}.",
        f"Open the alert: {document['alert_url']}",
        "", "-- ", "A Rapport notification: the alert's page has the evidence in full and the client's trajectory.",
    ]
    message = EmailMessage()
    message["Subject"] = f"Rapport: {_one_line(notification.headline)[:160]}"
    message["From"] = sender
    message["To"] = to
    message["Date"] = format_datetime(now)
    message["Message-ID"] = f"<{message_id}@rapport>"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content("\n".join(lines) + "\n")
    return message


def _one_line(text: str) -> str:
    return " ".join(text.split())
