"""An EHR's FHIR Subscription notifying Rapport directly (rest-hook, Subscriptions R5 Backport IG), over
real HTTP with ingest on the real NATS JetStream, on SQLite and PostgreSQL: an event notification with
the full resource is stored and answered as a batch; the same notification again stores nothing new;
a handshake and a heartbeat store nothing; a notification for another Subscription, an id-only payload
and a Bundle that is not a notification are refused, naming the field; tokens of other roles and no
token are refused before anything is read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from harness import running, serving
from test_gateway import client, fhir_json, fixture, gateway_settings, stored_submissions, token

pytestmark = pytest.mark.nats

HOOK = "/fhir/subscription-hook/phq-responses-01"


def notification(kind: str, *resources: dict[str, Any], subscription: str = "Subscription/phq-responses-01",
                 id_only: bool = False) -> dict[str, Any]:
    """The shape of the IG's example r4-notification-full-resource: a history Bundle, the status as
    Parameters first, then the events' resources."""
    status = {"resourceType": "Parameters", "id": "2d5afc69-6ef2-420f-a8d1-8500c99eb96c", "parameter": [
        {"name": "subscription", "valueReference": {"reference": f"https://ehr.clinic.example/fhir/{subscription}"}},
        {"name": "topic", "valueCanonical": "https://ehr.clinic.example/SubscriptionTopic/questionnaire-completed"},
        {"name": "status", "valueCode": "active"},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(len(resources))},
    ]}
    entries: list[dict[str, Any]] = [{"fullUrl": "urn:uuid:2d5afc69-6ef2-420f-a8d1-8500c99eb96c", "resource": status}]
    for r in resources:
        url = f"https://ehr.clinic.example/fhir/{r['resourceType']}/{r['id']}"
        entries.append({"fullUrl": url, "request": {"method": "POST", "url": r["resourceType"]},
                        "response": {"status": "201"}, **({} if id_only else {"resource": r})})
    return {"resourceType": "Bundle", "type": "history", "timestamp": "2026-03-02T10:20:00+00:00", "entry": entries}


def refused_code(answer: Any) -> str:
    return str(answer.json()["issue"][0]["details"]["coding"][0]["code"])


async def test_an_ehr_subscription_notifies_a_completed_response_and_it_is_stored_once(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    response = json.loads(fixture("fhir", "qr-linkid-loinc"))
    settings = gateway_settings(database_url, key_file)
    async with running(["ingest"], settings, fresh_stream), serving(settings, fresh_stream) as base, \
            client(base, token(key_file, tenant)) as ehr:
        for quiet in ("handshake", "heartbeat"):
            said = await ehr.post(HOOK, json=notification(quiet), headers=fhir_json())
            assert said.status_code == 200, said.text
            assert said.json()["issue"][0]["diagnostics"] == f"{quiet} received: nothing to store"
        assert await stored_submissions(database_url, tenant) == 0

        notified = await ehr.post(HOOK, json=notification("event-notification", response), headers=fhir_json())
        assert notified.status_code == 200, notified.text
        answer = notified.json()
        assert (answer["resourceType"], answer["type"]) == ("Bundle", "batch-response")
        assert [e["response"]["status"] for e in answer["entry"]] == ["201 Created"]
        assert answer["entry"][0]["response"]["outcome"]["issue"][0]["diagnostics"] == \
            "accepted as submission qr-0001, revision 1 (new)"
        again = await ehr.post(HOOK, json=notification("event-notification", response), headers=fhir_json())
        assert again.status_code == 200, again.text
        assert [e["response"]["status"] for e in again.json()["entry"]] == ["201 Created"], "a repeat is recognised"
        assert await stored_submissions(database_url, tenant) == 1

        for body, code, field in (
            (notification("event-notification", response, subscription="Subscription/other-subscription"),
             "subscription_mismatch", "entry[0].resource.subscription"),
            (notification("event-notification", response, id_only=True), "payload_not_full_resource",
             "entry[1].resource"),
            ({**notification("event-notification", response), "type": "batch"}, "not_a_notification", "type"),
        ):
            refused = await ehr.post(HOOK, json=body, headers=fhir_json())
            assert (refused.status_code, refused_code(refused)) == (422, code), refused.text
            assert field in json.dumps(refused.json()), refused.text
        assert await stored_submissions(database_url, tenant) == 1

        for role, status in (("clinician", 403), ("lead", 403), ("admin", 403), (None, 401)):
            bearer = token(key_file, tenant, role, clinician="clin-a") if role == "clinician" else \
                token(key_file, tenant, role) if role else None
            async with client(base, bearer) as other:
                answered = await other.post(HOOK, json=notification("event-notification", response),
                                            headers=fhir_json())
                assert answered.status_code == status, (role, answered.text)
        async with client(base, token(key_file, f"{tenant}-b")) as elsewhere:  # another tenant's integration
            assert (await elsewhere.post(HOOK, json=notification("event-notification", response),
                                         headers=fhir_json())).status_code == 200
        assert await stored_submissions(database_url, tenant) == 1, "the other tenant's copy is its own"
