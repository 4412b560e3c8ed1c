"""Subjects, tenants and the CloudEvents envelope: the public contract."""

from __future__ import annotations

import json

import pytest

from rapport.shared.contracts.problems import Problem
from rapport.shared.contracts.submission import SubmissionRejected
from rapport.shared.messaging import subjects
from rapport.shared.messaging.publish import cloud_event
from rapport.shared.settings import Settings, normalise_database_url


@pytest.mark.parametrize(
    ("subject", "tenant"),
    [("rapport.acme.in.submissions", "acme"), ("rapport.clinic_2-b.in.alert-commands", "clinic_2-b"),
     ("rapport.ACME.in.submissions", None), ("other.acme.in.submissions", None), ("rapport", None)],
)
def test_the_tenant_comes_from_the_subject(subject: str, tenant: str | None) -> None:
    assert subjects.tenant_of(subject) == tenant


def test_every_outbound_event_is_a_structured_cloudevent_with_the_tenant_extension() -> None:
    problem = Problem(field="instrument", code="unknown_instrument", message="x")
    data = SubmissionRejected(inbound_message_id="m-1", problems=[problem])
    event = cloud_event(entity="submission", verb="rejected", service="ingest", tenant="acme",
                        subject=subjects.outbound("acme", "submission", "rejected"), about="sub-1", data=data)
    body = json.loads(event.body)
    assert event.subject == "rapport.acme.submission.rejected"
    assert body["specversion"] == "1.0" and body["type"] == "rapport.submission.rejected.v1"
    assert body["source"] == "rapport/ingest" and body["tenant"] == "acme" and body["subject"] == "sub-1"
    assert body["id"] == event.event_id and body["datacontenttype"] == "application/json"
    assert body["data"]["problems"][0]["code"] == "unknown_instrument"


def test_database_urls_get_the_async_driver() -> None:
    assert normalise_database_url("postgres://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert normalise_database_url("sqlite:////tmp/x.db") == "sqlite+aiosqlite:////tmp/x.db"
    assert Settings(database_url="postgresql://u@h/db").database_url == "postgresql+asyncpg://u@h/db"


def test_licensed_instruments_are_enabled_per_tenant() -> None:
    settings = Settings(licensed_instruments="acme:srs,ors;beta:srs")
    assert settings.licensed_for("acme") == {"srs", "ors"}
    assert settings.licensed_for("beta") == {"srs"}
    assert settings.licensed_for("gamma") == frozenset()
