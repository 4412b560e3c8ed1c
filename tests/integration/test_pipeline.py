"""The clinic's stories, end to end over the real NATS JetStream, on SQLite and on PostgreSQL:
ingest, scoring and alerts running as they do in production, a client publishing submissions."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from harness import running, settings_for, watching

from rapport.journeys import Journey, Journeys

pytestmark = pytest.mark.nats
SERVICES = ["ingest", "scoring", "alerts"]
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def phq9(sid: str, items: list[int], *, day: int = 0, client: str = "client-0001", **extra: Any) -> bytes:
    return json.dumps({
        "submission_id": sid, "instrument": "phq9", "client_id": client, "episode_id": f"{client}-ep1",
        "clinician_id": "clinician-01", "administered_at": (T0 + timedelta(days=day)).isoformat(),
        "responses": {str(n + 1): v for n, v in enumerate(items)}, **extra,
    }).encode()


def srs(sid: str, total: float, *, day: int) -> bytes:
    quarter = round(total / 4, 1)
    items = [quarter, quarter, quarter, round(total - 3 * quarter, 1)]
    return json.dumps({
        "submission_id": sid, "instrument": "srs", "client_id": "client-0002", "episode_id": "client-0002-ep1",
        "clinician_id": "clinician-02", "administered_at": (T0 + timedelta(days=day)).isoformat(),
        "responses": {str(n + 1): v for n, v in enumerate(items)},
    }).encode()


async def answered(journeys: Journeys, body: bytes) -> Journey:
    journey = await journeys.submit(body)
    await asyncio.wait_for(journey.done.wait(), 30)
    return journey


async def test_a_phq9_endorsing_item_9_raises_a_risk_alert_and_notifies_the_clinician(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    async with running(SERVICES, settings_for(database_url), fresh_stream), watching(fresh_stream, tenant) as watch:
        journey = await answered(watch, phq9("sub-0001", [2, 2, 1, 2, 1, 1, 2, 1, 1]))
        [answer] = journey.answers
        assert answer["kind"] == "rapport.submission.accepted.v1" and answer["disposition"] == "new"
        score = journey.scores["sub-0001"]["score"]
        assert (score["total"], score["band"], score["caseness"]) == (13, "moderate", True)
        assert [(c["item"], c["value"]) for c in score["critical_items"]] == [(9, 1)]
        [raised] = [e["data"] for e in journey.alerts]
        assert raised["transition"] == "raised"
        # item 9 at 1 ('several days'): a risk alert below the higher-risk level 2 (critical_item v3)
        assert (raised["alert"]["kind"], raised["alert"]["severity"]) == ("critical_item", "high")
        assert raised["alert"]["evidence"][0]["rule_id"] == "critical_item"
        assert journey.evaluations["sub-0001"]["alert_ids"] == [raised["alert"]["alert_id"]]
        await watch.wait_until(lambda: bool(watch.notifications))
        [note] = watch.notifications
        assert note["subject"] == raised["alert"]["alert_id"]
        assert note["data"]["headline"].startswith("Risk item endorsed") and "item 9 = 1" in note["data"]["evidence"]


async def test_a_fhir_questionnaire_response_with_loinc_link_ids_is_scored_like_native_json(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    codes = ["44250-9", "44255-8", "44259-0", "44254-1", "44251-7", "44258-2", "44252-5", "44253-3", "44260-8"]
    answers = ["LA6569-3", "LA6570-1", "LA6568-5", "LA6569-3", "LA6568-5", "LA6569-3", "LA6568-5", "LA6568-5",
               "LA6568-5"]
    response = {
        "resourceType": "QuestionnaireResponse", "id": "qr-0001", "status": "completed",
        "questionnaire": "http://loinc.org/q/44249-1", "subject": {"reference": "Patient/client-0003"},
        "author": {"reference": "Practitioner/clinician-03"}, "authored": T0.isoformat(),
        "item": [{"linkId": "/" + c, "answer": [{"valueCoding": {"system": "http://loinc.org", "code": a}}]}
                 for c, a in zip(codes, answers, strict=True)],
    }
    async with running(SERVICES, settings_for(database_url), fresh_stream), watching(fresh_stream, tenant) as watch:
        journey = await answered(watch, json.dumps(response).encode())
        assert journey.answers[0]["submission"]["source_format"] == "fhir-questionnaire-response"
        score = journey.scores["qr-0001"]["score"]
        assert (score["total"], score["band"], score["critical_items"]) == (5, "mild", [])
        observation = journey.scores["qr-0001"]["fhir_observation"]
        assert observation["code"]["coding"][0]["code"] == "44261-6"
        assert observation["valueQuantity"]["value"] == 5
        assert observation["derivedFrom"] == [{"reference": "QuestionnaireResponse/qr-0001"}]
        assert journey.evaluations["qr-0001"]["transitions"] == []


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        (b'{"submission_id": "x", ', "invalid_json", "body"),
        (phq9("sub-bad-1", [0] * 9).replace(b'"phq9"', b'"phq99"'), "unknown_instrument", "instrument"),
        (phq9("sub-bad-2", [0] * 8), "missing_items", "responses"),
        (phq9("sub-bad-3", [0, 4, 0, 0, 0, 0, 0, 0, 0]), "out_of_range", "responses.2"),
        (phq9("sub-bad-4", [0] * 9, tenant="another-clinic"), "tenant_mismatch", "tenant"),
    ],
)
async def test_bad_input_gets_a_rejection_naming_the_problem(
    database_url: str, fresh_stream: str, tenant: str, body: bytes, code: str, field: str
) -> None:
    async with running(SERVICES, settings_for(database_url), fresh_stream), watching(fresh_stream, tenant) as watch:
        journey = await answered(watch, body)
        [answer] = journey.answers
        assert answer["kind"] == "rapport.submission.rejected.v1"
        assert [(p["code"], p["field"]) for p in answer["problems"]] == [(code, field)]
        assert not journey.scores


async def test_a_resubmission_changes_nothing_and_a_correction_supersedes_the_score(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    async with running(SERVICES, settings_for(database_url), fresh_stream), watching(fresh_stream, tenant) as watch:
        first = await answered(watch, phq9("sub-0005", [1] * 8 + [0]))
        again = await answered(watch, phq9("sub-0005", [1] * 8 + [0]))
        corrected = await answered(watch, phq9("sub-0005", [2] * 8 + [0], amends=True))
        assert first.scores["sub-0005"]["score"]["total"] == 8
        assert again.answers[0]["disposition"] == "unchanged" and not again.scores
        assert corrected.answers[0]["disposition"] == "amended"
        amended = corrected.scores["sub-0005"]
        assert (amended["revision"], amended["supersedes_revision"], amended["score"]["total"]) == (2, 1, 16)


async def test_a_client_back_after_a_long_break_starts_a_new_episode_when_the_source_names_none(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    """No episode ids: weekly PHQ-9s make one episode; 120 days later (gap 90) a new episode starts with
    its own baseline; a correction of the first session stays in the first episode, and the second
    session is re-sent against the corrected baseline."""
    def unnamed(sid: str, total: int, day: int, **extra: Any) -> bytes:
        body = json.loads(phq9(sid, [min(3, max(0, total - 3 * n)) for n in range(8)] + [0], day=day, **extra))
        del body["episode_id"]
        return json.dumps(body).encode()

    async with running(SERVICES, settings_for(database_url), fresh_stream), watching(fresh_stream, tenant) as watch:
        first = await answered(watch, unnamed("gap-1", 15, 0))
        second = await answered(watch, unnamed("gap-2", 12, 7))
        back = await answered(watch, unnamed("gap-3", 18, 127))
        corrected = await answered(watch, unnamed("gap-1", 16, 0, amends=True))
    episodes = [(j.scores[sid]["episode_id"], j.scores[sid]["episode_by"])
                for j, sid in ((first, "gap-1"), (second, "gap-2"), (back, "gap-3"), (corrected, "gap-1"))]
    assert episodes == [("auto-2026-03-02", "gap_rule")] * 2 + [("auto-2026-07-07", "gap_rule"),
                                                                ("auto-2026-03-02", "gap_rule")]
    # the correction of the first session (15 -> 16) re-sent the second with its new baseline
    re_sent = second.scores["gap-2"]
    assert (re_sent["change"]["baseline_total"], re_sent["re_placed_by"]) == (16, "gap-1:2")
    assert back.scores["gap-3"]["change"] is None  # the new episode's baseline
    assert corrected.scores["gap-1"]["revision"] == 2


async def test_an_srs_falling_from_38_to_31_raises_a_rupture_that_resolves_as_repaired_at_37(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    settings = settings_for(database_url, licensed_instruments=f"{tenant}:srs")
    async with running(SERVICES, settings, fresh_stream), watching(fresh_stream, tenant) as watch:
        quiet = await answered(watch, srs("srs-1", 38, day=0))
        dropped = await answered(watch, srs("srs-2", 31, day=7))
        still_low = await answered(watch, srs("srs-3", 33, day=14))
        back = await answered(watch, srs("srs-4", 37, day=21))
    assert quiet.evaluations["srs-1"]["transitions"] == []
    [raised] = [e["data"] for e in dropped.alerts]
    assert raised["transition"] == "raised" and raised["alert"]["kind"] == "alliance_rupture"
    assert "down from 38" in raised["alert"]["evidence"][0]["summary"]
    assert raised["alert"]["repair_prompt"]
    assert still_low.evaluations["srs-3"]["transitions"] == ["updated"]
    [resolved] = [e["data"] for e in back.alerts]
    assert resolved["transition"] == "resolved" and resolved["alert"]["resolution"] == "repaired"
    assert resolved["alert"]["alert_id"] == raised["alert"]["alert_id"]


async def test_an_srs_is_refused_for_a_tenant_without_a_licence(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    async with running(SERVICES, settings_for(database_url), fresh_stream), watching(fresh_stream, tenant) as watch:
        journey = await answered(watch, srs("srs-9", 38, day=0))
        assert [p["code"] for p in journey.answers[0]["problems"]] == ["instrument_not_licensed"]


async def test_a_clinician_acknowledges_then_resolves_an_alert_and_bad_commands_are_rejected(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    async with running(SERVICES, settings_for(database_url), fresh_stream), watching(fresh_stream, tenant) as watch:
        journey = await answered(watch, phq9("sub-0009", [1, 1, 1, 1, 1, 1, 1, 1, 2]))
        alert_id = journey.evaluations["sub-0009"]["alert_ids"][0]

        async def command(**fields: Any) -> dict[str, Any]:
            events, rejections = len(watch.alert_events), len(watch.command_rejections)
            await watch.client.jetstream().publish(
                f"rapport.{tenant}.in.alert-commands", json.dumps(fields).encode(),
                headers={"Nats-Msg-Id": fields.get("command_id", "x")},
            )
            await watch.wait_until(
                lambda: len(watch.alert_events) > events or len(watch.command_rejections) > rejections
            )
            return (watch.alert_events[events:] or watch.command_rejections[rejections:])[0]

        acknowledged = await command(command_id="cmd-1", alert_id=alert_id, action="acknowledge", by="clinician-01")
        assert acknowledged["data"]["transition"] == "acknowledged"
        assert acknowledged["data"]["alert"]["status"] == "acknowledged"
        assert acknowledged["data"]["by"] == "clinician-01"
        no_reason = await command(command_id="cmd-2", alert_id=alert_id, action="resolve", by="clinician-01")
        assert no_reason["type"] == "rapport.alert-command.rejected.v1" and "reason" in no_reason["data"]["reason"]
        unknown = await command(command_id="cmd-3", alert_id="no-such-alert", action="acknowledge", by="clinician-01")
        assert unknown["data"]["reason"] == "no such alert for this tenant"
        resolved = await command(command_id="cmd-4", alert_id=alert_id, action="resolve", by="clinician-01",
                                 reason="safety plan reviewed with the client")
        assert resolved["data"]["alert"]["status"] == "resolved"
        assert resolved["data"]["alert"]["resolution"] == "by_hand"


def gad7(sid: str, items: list[int], *, day: int) -> bytes:
    return phq9(sid, items, day=day).replace(b'"phq9"', b'"gad7"')


async def test_a_client_recovering_on_phq9_and_gad7_is_reported_in_nhs_talking_therapies_terms(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    async with running(SERVICES, settings_for(database_url), fresh_stream), watching(fresh_stream, tenant) as watch:
        first_phq = await answered(watch, phq9("tt-phq-1", [2, 2, 2, 2, 2, 2, 1, 1, 0], day=0))  # 14: a case
        assert first_phq.scores["tt-phq-1"]["talking_therapies"] is None  # no GAD-7 yet
        await answered(watch, gad7("tt-gad-1", [2, 2, 2, 1, 1, 1, 1], day=0))  # 10: a case
        await answered(watch, gad7("tt-gad-2", [1, 1, 0, 0, 0, 0, 0], day=56))  # 2
        last = await answered(watch, phq9("tt-phq-2", [1, 1, 1, 1, 0, 0, 0, 0, 0], day=56))  # 4
    course = last.scores["tt-phq-2"]["talking_therapies"]
    # PHQ-9 14 -> 4 (fall 10 >= 6) and GAD-7 10 -> 2 (fall 8 >= 4), both below caseness at the end
    assert course["case_at_start"] and not course["case_at_end"]
    assert course["reliable_improvement"] and not course["reliable_deterioration"]
    assert course["recovered"] and course["reliably_recovered"]


async def test_an_intake_entered_late_re_places_the_later_scores_and_the_deterioration_is_found(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    """Sessions 2 and 3 (PHQ-9 9, then 12) arrive first: against session 2 as the baseline nothing is
    wrong. Then the intake (5) is entered late: scoring re-sends sessions 2 and 3 with the intake as
    their baseline, and session 3, 7 points worse than the intake, raises reliable deterioration."""
    def total(sid: str, value: int, day: int) -> bytes:
        return phq9(sid, [min(3, max(0, value - 3 * n)) for n in range(8)] + [0], day=day)

    async with running(SERVICES, settings_for(database_url), fresh_stream), watching(fresh_stream, tenant) as watch:
        await answered(watch, total("late-2", 9, 7))
        third = await answered(watch, total("late-3", 12, 14))
        assert third.scores["late-3"]["change"]["baseline_total"] == 9 and not third.alerts
        await answered(watch, total("late-1", 5, 0))
        await watch.wait_until(lambda: any(e["data"]["alert"]["kind"] == "reliable_deterioration"
                                           for e in watch.alert_events))
    re_sent = third.scores["late-3"]
    assert (re_sent["re_placed_by"], re_sent["change"]["baseline_total"], re_sent["change"]["reliable"]) == (
        "late-1:1", 5, "deteriorated")
    [raised] = [e["data"] for e in watch.alert_events if e["data"]["alert"]["kind"] == "reliable_deterioration"]
    assert raised["transition"] == "raised" and raised["alert"]["evidence"][-1]["submission_id"] == "late-3"
