"""FHIR R4 Subscription rest-hook notifications (the Subscriptions R5 Backport IG), read so an EHR that
notifies on new QuestionnaireResponses (or Appointments) can be wired to Rapport without an
integration engine: `POST /fhir/subscription-hook/<subscription id>`, with the Subscription's channel
header carrying a bearer token of role integration.

A notification is a Bundle of type `history` whose first entry is the subscription's status: a
Parameters resource (R4, profile backport-subscription-status-r4: parameters `subscription`, `type`,
`status`, ...) or a SubscriptionStatus (R4B). Its `subscription` must be `Subscription/<the id in the
path>`, so a hook URL registered for one Subscription does not take another's notifications.
`handshake`, `heartbeat` and `query-status` carry nothing to store and are answered 200.
`event-notification` and `query-event` carry the events' resources in the entries after the status
(payload content `full-resource`); they are answered as the same entries posted as a batch would be
(a batch-response, one entry per answered resource). Rapport never fetches a resource back from the
EHR, so an `id-only` or `empty` payload is refused with the entry named. The resources' own ids make a
repeated notification of the same event recognised, as a resent batch is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# https://hl7.org/fhir/uv/subscriptions-backport/ (STU 1.1), ValueSet subscription-notification-type
CARRYING = frozenset({"event-notification", "query-event"})
QUIET = frozenset({"handshake", "heartbeat", "query-status"})


class NotificationRefused(ValueError):
    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(message)
        self.code, self.field, self.message = code, field, message


@dataclass(frozen=True)
class Notification:
    kind: str
    entries: list[dict[str, Any]]  # the events' resources, as entries of a batch Bundle (none when quiet)


def _status(resource: dict[str, Any]) -> tuple[Any, Any]:
    """(the subscription reference, the notification type) of the status entry."""
    if resource.get("resourceType") == "SubscriptionStatus":
        subscription = resource.get("subscription")
        return (subscription.get("reference") if isinstance(subscription, dict) else None), resource.get("type")
    parameters = resource.get("parameter")
    named = {p.get("name"): p for p in parameters if isinstance(p, dict)} if isinstance(parameters, list) else {}
    subscription = named.get("subscription", {}).get("valueReference")
    return (subscription.get("reference") if isinstance(subscription, dict) else None), \
        named.get("type", {}).get("valueCode")


def read_notification(document: dict[str, Any], subscription_id: str) -> Notification:
    if document.get("resourceType") != "Bundle" or document.get("type") != "history":
        raise NotificationRefused("not_a_notification", "type", "a subscription notification is a Bundle of type "
                                  "history whose first entry is the subscription's status (Subscriptions R5 "
                                  "Backport IG)")
    entries = document.get("entry")
    if not isinstance(entries, list) or not entries:
        entries = [None]
    first = entries[0].get("resource") if isinstance(entries[0], dict) else None
    if not isinstance(first, dict) or first.get("resourceType") not in ("Parameters", "SubscriptionStatus"):
        raise NotificationRefused("not_a_notification", "entry[0].resource", "the first entry of a notification "
                                  "is the subscription's status: a Parameters (R4) or SubscriptionStatus (R4B)")
    subscription, kind = _status(first)
    wanted = f"Subscription/{subscription_id}"
    if not isinstance(subscription, str) or not (subscription == wanted or subscription.endswith(f"/{wanted}")):
        raise NotificationRefused("subscription_mismatch", "entry[0].resource.subscription",
                                  f"this hook takes the notifications of {wanted} only; register each "
                                  f"Subscription with a hook URL of its own id")
    if kind in QUIET:
        return Notification(str(kind), [])
    if kind not in CARRYING:
        raise NotificationRefused("unknown_notification_type", "entry[0].resource.type",
                                  "the notification type must be one of handshake, heartbeat, event-notification, "
                                  "query-status, query-event")
    carried: list[dict[str, Any]] = []
    for n, entry in enumerate(entries[1:], start=1):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            raise NotificationRefused("payload_not_full_resource", f"entry[{n}].resource",
                                      f"entry[{n}] carries no resource (an id-only or empty payload): set the "
                                      "Subscription's payload content to full-resource; Rapport does not fetch "
                                      "resources back from the EHR")
        full_url = entry.get("fullUrl")
        carried.append({**({"fullUrl": full_url} if isinstance(full_url, str) else {}), "resource": resource})
    return Notification(str(kind), carried)
