"""Every rejection is counted under the instrument it was for, when normalisation knew it: a registry
id or "unknown", never text from the payload (metric labels are few and carry no PHI)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fakes import ingest_unit_of_work

from rapport.services.ingest.handlers import Ingest
from rapport.shared.db.delivery import Outgoing
from rapport.shared.instruments import load_registry
from rapport.shared.messaging.consumer import Inbound
from rapport.shared.metrics import REGISTRY as METRICS
from rapport.shared.settings import Settings

FIXTURES = Path(__file__).parents[1] / "fixtures"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def native(**changes: Any) -> bytes:
    submission = json.loads((FIXTURES / "native" / "phq9-complete.json").read_bytes())
    submission.update(changes)
    return json.dumps(submission).encode()


def inbound(tenant: str, n: int, body: bytes) -> Inbound:
    return Inbound(message_id=f"m-{n}", subject=f"rapport.{tenant}.in.submissions", tenant=tenant, body=body,
                   deliveries=1)


async def answers(messages: list[Inbound]) -> list[Outgoing]:
    uow = ingest_unit_of_work(NOW)
    await Ingest(load_registry(), Settings())(uow, messages)
    return uow.events


def rejected_count(tenant: str, instrument: str) -> float:
    value = METRICS.get_sample_value("rapport_submissions_total",
                                     {"tenant": tenant, "instrument": instrument, "outcome": "rejected"})
    return value or 0.0


async def test_rejections_are_counted_under_the_instrument_normalisation_identified() -> None:
    tenant = "metrics-rejections"
    bodies = [
        native(clinician_id="clinician.03"),                                   # phq9, a bad clinician id
        native(responses={"1": 1}),                                            # phq9, items missing
        (FIXTURES / "fhir" / "qr-answer-loinc-alternate-phq9.json").read_bytes(),  # phq9, unscorable answer
        native(instrument="Jane Roe"),                                         # free text: never a label
        native(instrument="Jane Roe", clinician_id="clinician.03"),            # free text, other problems
        b"{not json",                                                          # nothing known
    ]
    uow = ingest_unit_of_work(NOW)
    await Ingest(load_registry(), Settings())(uow, [inbound(tenant, n, b) for n, b in enumerate(bodies)])
    assert [e.subject for e in uow.events] == [f"rapport.{tenant}.submission.rejected"] * len(bodies)
    assert rejected_count(tenant, "phq9") == 0, "nothing counts before the batch commits"
    uow.committed()
    assert rejected_count(tenant, "phq9") == 3
    assert rejected_count(tenant, "unknown") == 3
    assert rejected_count(tenant, "Jane Roe") == 0


async def test_a_rejection_of_a_huge_body_stays_one_small_event() -> None:
    # 80,000 bad response keys in an ~900 KB body once made a 10.5 MB rejection, over the broker's 1 MB.
    submission = json.loads(native())
    submission["responses"] = {f"q{n}": 1 for n in range(80_000)}
    body = json.dumps(submission, separators=(",", ":")).encode()
    assert 850_000 < len(body) < 1_000_000
    [event] = await answers([inbound("huge-body", 1, body)])
    assert len(event.body) < 32_000
    problems = json.loads(event.body)["data"]["problems"]
    assert len(problems) == 51 and problems[-1]["code"] == "more_problems"


async def test_the_handler_bounds_administration_times_by_when_the_message_arrived() -> None:
    body = native(administered_at="2026-03-04T10:00:00+00:00")  # more than a day after NOW
    [event] = await answers([inbound("future-time", 1, body)])
    assert event.subject == "rapport.future-time.submission.rejected"
    [problem] = json.loads(event.body)["data"]["problems"]
    assert (problem["code"], problem["field"]) == ("out_of_range", "administered_at")
