"""The alerts service's handlers against their unit of work with an in-memory record (issue 10): a
rupture raised once and announced, every score's evaluation completed, counts after commit, and
clinicians' commands acting only on their own tenant's alerts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from fakes import InMemoryAlertRecord, alerts_unit_of_work

from rapport.services.alerts.handlers import AlertCommands, Alerting
from rapport.services.alerts.rules import load_ruleset
from rapport.services.scoring.domain import score as score_of
from rapport.shared.contracts.score import ScoreComputed, Scored
from rapport.shared.instruments import load_registry
from rapport.shared.messaging.consumer import Inbound
from rapport.shared.messaging.publish import cloud_event
from rapport.shared.metrics import REGISTRY as METRICS

T0 = datetime(2026, 2, 2, 9, tzinfo=UTC)
NOW = datetime(2026, 6, 1, tzinfo=UTC)
ALERTING = Alerting(load_ruleset(), load_registry())


def quarters(total: float) -> dict[int, float | None]:
    quarter = round(total / 4, 1)
    return {1: quarter, 2: quarter, 3: quarter, 4: round(total - 3 * quarter, 1)}


def srs(tenant: str, session: int, total: float) -> Inbound:
    """Dana's SRS (a synthetic client) after session `session`."""
    scored = Scored(instrument="srs", instrument_version="3", kind="alliance", better="higher", total=total,
                    total_min=0, total_max=40, risk_checked=True)
    score = ScoreComputed(
        tenant=tenant, submission_id=f"srs-{session}", revision=1, client_id="client-dana", episode_id="ep-1",
        clinician_id="clin-07", administered_at=T0 + timedelta(days=7 * session), session_number=session,
        score=scored, responses=quarters(total), parameters={"concern_cutoff": 36},
    )
    event = cloud_event(entity="score", verb="computed", service="scoring", tenant=tenant,
                        subject=f"rapport.{tenant}.score.computed", about=score.submission_id, data=score)
    return Inbound(f"m-{session}", event.subject, tenant, event.body, 1)


def command(tenant: str, alert_id: str, n: int, action: str = "acknowledge") -> Inbound:
    body = json.dumps({"command_id": f"cmd-{n}", "alert_id": alert_id, "action": action, "by": "clin-07"})
    return Inbound(f"c-{n}", f"rapport.{tenant}.in.alert-commands", tenant, body.encode(), 1)


def raised_count(tenant: str) -> float:
    return METRICS.get_sample_value("rapport_alert_transitions_total",
                                    {"tenant": tenant, "kind": "alliance_rupture", "transition": "raised"}) or 0.0


async def test_a_falling_alliance_raises_one_rupture_tells_the_therapist_and_completes_each_evaluation() -> None:
    tenant, record = "handler-rupture", InMemoryAlertRecord()
    uow = alerts_unit_of_work(NOW, record)
    await ALERTING(uow, [srs(tenant, 1, 38.0), srs(tenant, 2, 31.0)])
    kinds = [e.subject.split(".", 2)[2] for e in uow.events]
    assert kinds.count("evaluation.completed") == 2
    assert kinds.count("alert.raised") == 1 and "notify.clin-07" in kinds
    [rupture] = record.alerts.values()
    assert (rupture.kind, rupture.status, rupture.clinician_id) == ("alliance_rupture", "open", "clin-07")
    raised = json.loads(next(e for e in uow.events if e.subject.endswith("alert.raised")).body)["data"]
    told = json.loads(next(e for e in uow.events if e.subject.endswith("notify.clin-07")).body)["data"]
    assert raised["headline"] == told["headline"] and "SRS" in raised["headline"]
    assert raised["evidence_words"] == told["evidence"], "a worklist shows what the notification said"
    assert raised_count(tenant) == 0, "nothing counts before the batch commits"
    uow.committed()
    assert raised_count(tenant) == 1
    assert record.episodes[(tenant, "client-dana", "ep-1")][0] == 1


async def test_a_command_acts_on_its_own_tenants_alert_and_another_tenants_id_changes_nothing() -> None:
    record = InMemoryAlertRecord()
    await ALERTING(alerts_unit_of_work(NOW, record), [srs("clinic-a", 1, 38.0), srs("clinic-a", 2, 31.0)])
    [rupture] = record.alerts.values()
    uow = alerts_unit_of_work(NOW, record)
    await AlertCommands()(uow, [command("clinic-b", rupture.alert_id, 1), command("clinic-a", rupture.alert_id, 2)])
    rejected, acknowledged = uow.events
    assert rejected.subject == "rapport.clinic-b.alert-command.rejected"
    assert json.loads(rejected.body)["data"]["reason"] == "no such alert for this tenant"
    assert acknowledged.subject == "rapport.clinic-a.alert.updated"
    assert record.alerts[rupture.alert_id].status == "acknowledged"


WAISR = load_registry().get("waisr")
PARTS = {"goal": (4, 6, 8, 11), "task": (1, 2, 10, 12), "bond": (3, 5, 7, 9)}  # the registry's item map


def waisr(tenant: str, session: int, goal: int, task: int, bond: int) -> Inbound:
    """Sam's WAI-SR (a synthetic client) after session `session`, scored from its items by the scoring domain:
    each part's points spread over its four items (1-5)."""
    assert WAISR is not None
    responses: dict[int, float | None] = {}
    for part, total in {"goal": goal, "task": task, "bond": bond}.items():
        for n, item in enumerate(PARTS[part]):
            responses[item] = float(total // 4 + (1 if n < total % 4 else 0))
    score = ScoreComputed(
        tenant=tenant, submission_id=f"wai-{session}", revision=1, client_id="client-sam", episode_id="ep-sam",
        clinician_id="clin-07", administered_at=T0 + timedelta(days=7 * session), session_number=session,
        score=score_of(WAISR, responses), responses=responses)
    event = cloud_event(entity="score", verb="computed", service="scoring", tenant=tenant,
                        subject=f"rapport.{tenant}.score.computed", about=score.submission_id, data=score)
    return Inbound(f"m-wai-{session}", event.subject, tenant, event.body, 1)


async def test_sams_bond_wobble_is_quiet_and_the_collapse_a_week_later_is_one_alert_naming_the_bond() -> None:
    """Sam rates the WAI-SR 48 of 60 (every part 16) for three sessions; at session 4 one bond item is a step
    lower (47): nothing is raised, nobody is told. At session 5 the bond falls to 10 (total 42): one
    alliance_rupture alert on WAI-SR, published once as rapport.alert.raised.v1, naming the bond in its evidence
    and headline, with the bond prompt in the notification; not a total alert and a bond alert."""
    tenant, record = "handler-waisr", InMemoryAlertRecord()
    for session in (1, 2, 3):
        await ALERTING(alerts_unit_of_work(NOW, record), [waisr(tenant, session, 16, 16, 16)])
    wobble = alerts_unit_of_work(NOW, record)
    await ALERTING(wobble, [waisr(tenant, 4, 16, 16, 15)])
    assert record.alerts == {} and not any(e.subject.split(".", 2)[2].startswith(("alert.", "notify.")) for e in
                                           wobble.events)
    collapse = alerts_unit_of_work(NOW, record)
    await ALERTING(collapse, [waisr(tenant, 5, 16, 16, 10)])
    [alert] = record.alerts.values()
    assert (alert.kind, alert.instrument, alert.subscale) == ("alliance_rupture", "waisr", None)
    assert list(alert.evidence[-1].values["parts"]) == ["bond"]
    raised = [json.loads(e.body) for e in collapse.events if e.subject.endswith("alert.raised")]
    assert len(raised) == 1 and raised[0]["type"] == "rapport.alert.raised.v1"
    assert raised[0]["data"]["headline"].startswith("Alliance drop (bond): WAI-SR 42")
    [told] = [json.loads(e.body)["data"] for e in collapse.events if e.subject.endswith("notify.clin-07")]
    assert "relationship" in told["prompt"]
