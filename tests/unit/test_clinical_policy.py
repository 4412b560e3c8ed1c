"""Each tenant's clinical policy (issue 13), told as clinic stories with synthetic people, through the alerts
service's handler and its fake unit of work: the same client's sessions under an NHS Talking Therapies
service's policy and a US clinic's, a policy changed between two sessions, rules turned off for an instrument,
and the validation that refuses what a rule cannot use."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fakes import InMemoryAlertRecord, alerts_unit_of_work

from rapport.policy import PolicyError, read_file
from rapport.services.alerts.handlers import Alerting
from rapport.services.alerts.rules import ClinicalPolicy, Context, PolicyValues, applied, check, load_ruleset
from rapport.services.alerts.rules.policy import effective
from rapport.shared.contracts.score import ChangeFromBaseline, ScoreComputed, Scored
from rapport.shared.instruments import load_registry
from rapport.shared.messaging.consumer import Inbound
from rapport.shared.messaging.publish import cloud_event

T0 = datetime(2026, 2, 2, 9, tzinfo=UTC)
NOW = datetime(2026, 6, 1, tzinfo=UTC)
REGISTRY = load_registry()
RULES = load_ruleset()
SIGNED = datetime(2026, 1, 15, 12, tzinfo=UTC)
# Robin (a synthetic client) starts GAD-7 at 12 and settles at 9: three points better, less than the
# reliable change of 4 (NHS Talking Therapies), and between the two caseness cutoffs (8 and 10).
ROBIN = [12, 11, 10, 9, 9, 9, 9, 9]


def gad7(tenant: str, session: int, total: int, *, baseline: int = ROBIN[0], client: str = "client-robin") -> Inbound:
    """Robin's GAD-7 at `session` as scoring sends it: the registry's caseness 8 and reliable change 4."""
    scored = Scored(instrument="gad7", instrument_version="1", kind="outcome", better="lower", total=total,
                    total_min=0, total_max=21, caseness=total >= 8, risk_checked=True)
    change = None if session == 1 else ChangeFromBaseline(
        baseline_total=baseline, baseline_at=T0, change_from_baseline=total - baseline, reliable_change_value=4,
        reliable="improved" if baseline - total >= 4 else "deteriorated" if total - baseline >= 4 else "none")
    score = ScoreComputed(
        tenant=tenant, submission_id=f"{client}-gad7-{session}", revision=1, client_id=client,
        episode_id=f"{client}-ep1", clinician_id="clin-07", administered_at=T0 + timedelta(days=7 * (session - 1)),
        session_number=session, score=scored, change=change,
        responses=dict(enumerate([min(3, max(0, total - 3 * n)) for n in range(7)], start=1)),
        parameters={"caseness_cutoff": 8, "reliable_change": 4},
    )
    event = cloud_event(entity="score", verb="computed", service="scoring", tenant=tenant,
                        subject=f"rapport.{tenant}.score.computed", about=score.submission_id, data=score)
    return Inbound(f"m-{client}-{session}", event.subject, tenant, event.body, 1)


def policy(tenant: str, version: int, values: dict[str, object]) -> ClinicalPolicy:
    return ClinicalPolicy(tenant=tenant, version=version, signed_off_by="Dr Priya Lead (synthetic)",
                          signed_off_at=SIGNED + timedelta(days=version), values=PolicyValues.model_validate(values))


US_CASENESS = {"note": "US clinic: the developers' cutoff", "instruments": {"gad7": {"not_on_track": {"caseness": 10}}}}
NHS_CASENESS = {"note": "NHS Talking Therapies: the IAPT manual's", "instruments": {"gad7": {"not_on_track":
                                                                                            {"caseness": 8}}}}


async def sessions_of(alerting: Alerting, record: InMemoryAlertRecord, tenant: str, totals: list[int]) -> None:
    for n, total in enumerate(totals, start=1):
        await alerting(alerts_unit_of_work(NOW, record), [gad7(tenant, n, total)])


async def test_robin_is_not_on_track_at_the_nhs_service_and_out_of_the_clinical_range_at_the_us_clinic() -> None:
    """The NHS Talking Therapies service keeps the sourced caseness 8 (no policy of its own); the US clinic's
    policy counts GAD-7 caseness from 10. Robin's 9 at session 6 is still a case at the first and not at the
    second."""
    record, alerting = InMemoryAlertRecord(), Alerting(RULES, REGISTRY)
    record.policies["us-clinic"] = [policy("us-clinic", 1, US_CASENESS)]
    await sessions_of(alerting, record, "nhs-service", ROBIN[:5])
    await sessions_of(alerting, record, "us-clinic", ROBIN[:5])
    assert record.alerts == {}, "nothing before the session-6 checkpoint"
    uow, reads = alerts_unit_of_work(NOW, record), len(record.reads)
    await alerting(uow, [gad7("nhs-service", 6, 9), gad7("us-clinic", 6, 9)])
    assert record.reads[reads:] == ["policies"], "one read of the tenants' policies per batch, both tenants at once"
    [alert] = record.alerts.values()
    assert (alert.tenant, alert.kind, alert.instrument) == ("nhs-service", "not_on_track", "gad7")
    assert alert.policy_version == 0, "no policy set: the sourced defaults, version 0"
    assert alert.evidence[0].values["caseness_cutoff"] == 8 and alert.evidence[0].policy_version == 0
    completed = [json.loads(e.body)["data"] for e in uow.events if e.subject.endswith("evaluation.completed")]
    assert [c["transitions"] for c in completed] == [["raised"], []]


async def test_a_policy_changed_between_two_sessions_applies_to_the_next_evaluation_never_to_the_old_alert() -> None:
    """The service signs off v1 (caseness 8), Robin's session 6 raises not_on_track under it; the service then
    moves to caseness 10 (v2). The alert raised under v1 still says v1 and 8; session 7 runs under v2, where
    Robin's 9 is out of the clinical range, and resolves it saying so."""
    tenant, record, alerting = "clinic-story", InMemoryAlertRecord(), Alerting(RULES, REGISTRY)
    record.policies[tenant] = [policy(tenant, 1, NHS_CASENESS)]
    await sessions_of(alerting, record, tenant, ROBIN[:5])
    uow = alerts_unit_of_work(NOW, record)
    await alerting(uow, [gad7(tenant, 6, 9)])
    [raised] = record.alerts.values()
    assert (raised.kind, raised.status, raised.policy_version) == ("not_on_track", "open", 1)
    [event] = [json.loads(e.body) for e in uow.events if e.subject.endswith("alert.raised")]
    assert event["type"] == "rapport.alert.raised.v1", "an optional field: the event keeps its type"
    alert = event["data"]["alert"]
    assert alert["policy_version"] == 1 and alert["evidence"][0]["policy_version"] == 1
    record.policies[tenant].append(policy(tenant, 2, US_CASENESS))
    stored = record.alerts[raised.alert_id]
    assert stored == raised, "setting a policy rewrites no alert"
    assert (stored.policy_version, stored.evidence[0].policy_version) == (1, 1)
    assert stored.evidence[0].values["caseness_cutoff"] == 8
    uow = alerts_unit_of_work(NOW, record)
    await alerting(uow, [gad7(tenant, 7, 9)])
    [moved] = [json.loads(e.body)["data"] for e in uow.events if e.subject.endswith("alert.resolved")]
    assert moved["alert"]["alert_id"] == raised.alert_id
    assert moved["alert"]["resolution"] == "back_on_track" and "out of the clinical range" in moved["reason"]
    assert moved["alert"]["policy_version"] == 2, "the evaluation ran under v2"
    first, second = [t for _, t in record.transitions if t.alert.alert_id == raised.alert_id]
    assert (first.transition, first.alert.policy_version) == ("raised", 1), "the raise still says v1"
    assert first.alert.evidence[0].values["caseness_cutoff"] == 8
    assert (second.transition, second.alert.policy_version) == ("resolved", 2)


async def test_a_late_score_after_a_policy_change_re_evaluates_under_the_new_one_and_keeps_what_the_old_found() -> None:
    """Robin's session 3 reaches the service late, after it moved from caseness 8 (v1) to 10 (v2). The episode
    is evaluated again under v2, where Robin's 9 is no longer a case: the alert resolves, saying v2, and keeps
    the v1 evidence that raised it (8) as it was."""
    tenant, record, alerting = "late-clinic", InMemoryAlertRecord(), Alerting(RULES, REGISTRY)
    record.policies[tenant] = [policy(tenant, 1, NHS_CASENESS)]
    for n in (1, 2, 4, 5, 6):
        await alerting(alerts_unit_of_work(NOW, record), [gad7(tenant, n, ROBIN[n - 1])])
    [raised] = record.alerts.values()
    assert (raised.kind, raised.policy_version) == ("not_on_track", 1)
    record.policies[tenant].append(policy(tenant, 2, US_CASENESS))
    await alerting(alerts_unit_of_work(NOW, record), [gad7(tenant, 3, ROBIN[2])])
    after = record.alerts[raised.alert_id]
    assert (after.status, after.resolution, after.policy_version) == ("resolved", "superseded", 2)
    assert [(e.policy_version, e.values["caseness_cutoff"]) for e in after.evidence] == [(1, 8)]


async def test_a_late_score_keeps_the_old_policys_evidence_beside_what_the_new_one_finds() -> None:
    """The service keeps caseness 8 but moves 'stalled' to session 7 (v2); Robin's late session 3 replays the
    episode under v2, which still finds Robin not on track at session 6: the open alert is updated under v2
    and carries both findings, v1's and v2's."""
    tenant, record, alerting = "late-update", InMemoryAlertRecord(), Alerting(RULES, REGISTRY)
    record.policies[tenant] = [policy(tenant, 1, NHS_CASENESS)]
    for n in (1, 2, 4, 5, 6):
        await alerting(alerts_unit_of_work(NOW, record), [gad7(tenant, n, ROBIN[n - 1])])
    [raised] = record.alerts.values()
    record.policies[tenant].append(policy(tenant, 2, {**NHS_CASENESS, "rules": {"not_on_track": {
        "stalled_session": 7}}}))
    await alerting(alerts_unit_of_work(NOW, record), [gad7(tenant, 3, ROBIN[2])])
    after = record.alerts[raised.alert_id]
    assert (after.status, after.policy_version) == ("open", 2)
    assert [(e.policy_version, e.values["stalled_session"]) for e in after.evidence] == [(1, 9), (2, 7)]


async def test_robin_at_the_us_clinic_is_still_caught_when_the_score_stays_at_its_cutoff() -> None:
    """Caseness 10 is not an off switch: a client who stays at 10, the cutoff itself, is still a case and not on
    track at the US clinic too."""
    record, alerting = InMemoryAlertRecord(), Alerting(RULES, REGISTRY)
    record.policies["us-clinic"] = [policy("us-clinic", 1, US_CASENESS)]
    await sessions_of(alerting, record, "us-clinic", [13, 12, 12, 11, 10, 10])
    [alert] = record.alerts.values()
    assert (alert.kind, alert.policy_version, alert.evidence[0].values["caseness_cutoff"]) == ("not_on_track", 1, 10)


async def test_a_rule_turned_off_for_an_instrument_stays_silent_there_and_runs_elsewhere() -> None:
    """A clinic that reviews GAD-7 progress at its own case reviews turns the checkpoint off for GAD-7 only:
    Robin's stalled GAD-7 raises nothing there, while a reliable deterioration on it still alerts."""
    tenant, record, alerting = "reviews-clinic", InMemoryAlertRecord(), Alerting(RULES, REGISTRY)
    record.policies[tenant] = [policy(tenant, 1, {"instruments": {"gad7": {"not_on_track": {"enabled": False}}}})]
    await sessions_of(alerting, record, tenant, ROBIN[:7])
    assert record.alerts == {}
    uow = alerts_unit_of_work(NOW, record)
    await alerting(uow, [gad7(tenant, 8, 17)])  # five points worse than intake: reliably worse
    [alert] = record.alerts.values()
    assert (alert.kind, alert.policy_version) == ("reliable_deterioration", 1)


async def test_a_rule_turned_off_for_the_tenant_leaves_an_alert_it_raised_before_as_it_stands() -> None:
    tenant, record, alerting = "no-checkpoint", InMemoryAlertRecord(), Alerting(RULES, REGISTRY)
    await sessions_of(alerting, record, tenant, ROBIN[:6])
    [raised] = record.alerts.values()
    record.policies[tenant] = [policy(tenant, 1, {"rules": {"not_on_track": {"enabled": False}}})]
    await sessions_of_from(alerting, record, tenant, 7, [4])  # Robin recovers: the rule that would clear it is off
    assert record.alerts[raised.alert_id] == raised, "a rule turned off rewrites and resolves nothing"


async def sessions_of_from(alerting: Alerting, record: InMemoryAlertRecord, tenant: str, first: int,
                           totals: list[int]) -> None:
    for n, total in enumerate(totals, start=first):
        await alerting(alerts_unit_of_work(NOW, record), [gad7(tenant, n, total)])


async def test_the_tenants_checkpoints_move_the_not_on_track_alert_to_its_own_session() -> None:
    """A service with longer courses checks at session 8 rather than 6."""
    tenant, record, alerting = "long-courses", InMemoryAlertRecord(), Alerting(RULES, REGISTRY)
    record.policies[tenant] = [policy(tenant, 1, {"rules": {"not_on_track": {"at_risk_session": 8,
                                                                             "stalled_session": 12}}})]
    await sessions_of(alerting, record, tenant, ROBIN[:7])
    assert record.alerts == {}, "session 7 is before this service's checkpoint"
    await sessions_of_from(alerting, record, tenant, 8, [9])
    [alert] = record.alerts.values()
    values = alert.evidence[0].values
    assert (values["checkpoint"], values["at_risk_session"], values["stalled_session"]) == (8, 8, 12)
    assert RULES.not_on_track.parameters.at_risk_session.value == 6, "the shared rules are untouched"


# --- what a policy may say --------------------------------------------------------------------------


def problems(values: dict[str, object]) -> list[str]:
    return [str(p) for p in check(PolicyValues.model_validate(values), REGISTRY)]


def test_a_threshold_outside_the_instruments_range_is_refused_naming_the_field_and_the_range() -> None:
    assert problems({"instruments": {"gad7": {"not_on_track": {"caseness": 22}}}}) == [
        "instruments.gad7.not_on_track.caseness: 22 is outside the allowed range: a number from 0 to 21 "
        "(gad7 caseness cutoff: the clinical range at or above it)"]
    assert problems({"instruments": {"gad7": {"not_on_track": {"caseness": 21}}}}) == []
    assert problems({"instruments": {"gad7": {"not_on_track": {"caseness": 0}}}}) == []
    assert problems({"instruments": {"gad7": {"not_on_track": {"caseness": -1}}}})[0].startswith(
        "instruments.gad7.not_on_track.caseness: -1 is outside")
    [srs] = problems({"instruments": {"srs": {"alliance_rupture": {"concern_cutoff": 40.5}}}})
    assert srs.startswith("instruments.srs.alliance_rupture.concern_cutoff") and "from 0 to 40" in srs
    [drop] = problems({"instruments": {"srs": {"alliance_rupture": {"drop_points": 0}}}})
    assert "a number above 0 up to 40" in drop


def test_a_rule_on_an_instrument_it_cannot_use_is_refused_saying_why() -> None:
    assert problems({"instruments": {"k10": {"not_on_track": {"enabled": True}}}}) == [
        "instruments.k10.not_on_track: not_on_track cannot run on k10: k10 has no reliable-change value in the "
        "registry"]
    assert problems({"instruments": {"phq2": {"reliable_deterioration": {"enabled": True}}}}) == [
        "instruments.phq2.reliable_deterioration: reliable_deterioration cannot run on phq2: phq2 is a screener"]
    assert problems({"instruments": {"phq9": {"alliance_rupture": {"drop_points": 2}}}}) == [
        "instruments.phq9.alliance_rupture: alliance_rupture cannot run on phq9: phq9 is not an alliance measure"]
    assert problems({"instruments": {"srs": {"not_on_track": {"caseness": 30}}}}) == [
        "instruments.srs.not_on_track: not_on_track cannot run on srs: srs is not an outcome measure"]
    [waisr] = problems({"instruments": {"waisr": {"alliance_rupture": {"concern_cutoff": 30}}}})
    assert waisr == "instruments.waisr.alliance_rupture.concern_cutoff: waisr has no concern_cutoff to set"


def test_the_risk_rule_cannot_be_turned_off_and_unknown_names_are_named() -> None:
    [risk] = problems({"rules": {"critical_item": {"enabled": False}}})
    assert risk.startswith("rules.critical_item.enabled: critical_item cannot be turned off")
    assert problems({"instruments": {"phq9": {"critical_item": {"enabled": False}}}})[0].startswith(
        "instruments.phq9.critical_item.enabled: critical_item cannot be turned off")
    assert problems({"rules": {"critical_item": {"enabled": True}}}) == []
    assert problems({"rules": {"sudden_gain": {"enabled": True}}})[0].startswith("rules.sudden_gain: no such rule")
    assert problems({"instruments": {"bdi": {"not_on_track": {"caseness": 14}}}})[0].startswith(
        "instruments.bdi: no such instrument")
    assert problems({"rules": {"not_on_track": {"caseness": 10}}})[0].startswith(
        "rules.not_on_track.caseness: not_on_track has no caseness to set here")


def test_rule_thresholds_are_refused_outside_their_range_and_against_each_other() -> None:
    assert problems({"rules": {"not_on_track": {"at_risk_session": 1}}})[0].startswith(
        "rules.not_on_track.at_risk_session: 1 is outside the allowed range: a whole number from 2 to 52")
    assert problems({"rules": {"not_on_track": {"at_risk_session": 6.5}}})[0].endswith(
        "(the session by which no reliable improvement is 'at risk')")
    assert problems({"rules": {"not_on_track": {"at_risk_session": 10}}}) == [
        "rules.not_on_track.at_risk_session: at_risk_session 10 is above stalled_session 9: the 'at risk' "
        "checkpoint comes before 'stalled'"]
    assert problems({"rules": {"not_on_track": {"at_risk_session": 9}}}) == []
    assert problems({"rules": {"alliance_rupture": {"z_major": -0.8}}})[0].startswith(
        "rules.alliance_rupture.z_major: -0.8 is outside")
    assert problems({"rules": {"disengagement": {"enabled": False}}})[0].startswith(
        "rules.disengagement.enabled: disengagement cannot be turned off")
    assert problems({"rules": {"priority": {"enabled": "no"}}})[0].startswith(
        "rules.priority.enabled: 'no' is outside the allowed range: true or false")


def test_show_says_where_each_value_comes_from() -> None:
    shown = effective("us-clinic", policy("us-clinic", 3, US_CASENESS), RULES, REGISTRY)
    by_field = {(v.rule, v.instrument, v.field): v for v in shown.values}
    own = by_field[("not_on_track", "gad7", "caseness")]
    assert (own.value, own.origin, own.confidence) == (10, "tenant", "tenant")
    phq9 = by_field[("not_on_track", "phq9", "caseness")]
    assert (phq9.value, phq9.origin) == (10, "default") and phq9.sources and phq9.confidence == "verified"
    checkpoint = by_field[("not_on_track", None, "at_risk_session")]
    assert (checkpoint.value, checkpoint.origin, checkpoint.sources) == (6, "default", ["R33"])
    assert (shown.version, shown.signed_off_by) == (3, "Dr Priya Lead (synthetic)")
    assert "not_on_track" not in shown.runs["k10"] and "reliable-change" in shown.not_run["k10"]["not_on_track"]
    none = effective("new-clinic", None, RULES, REGISTRY)
    assert none.version == 0 and all(v.origin == "default" for v in none.values)
    gad7_default = {(v.rule, v.instrument, v.field): v for v in none.values}[("not_on_track", "gad7", "caseness")]
    assert gad7_default.value == 8 and gad7_default.confidence == "secondary"


def test_a_tenants_value_is_marked_as_its_own_in_the_rules_it_runs_under() -> None:
    under = applied(RULES, policy("a-clinic", 2, {"rules": {"disengagement": {"gap_days": 21}}}))
    gap = under.disengagement.parameters.gap_days
    assert (gap.value, gap.source, gap.confidence) == (21.0, [], "tenant")
    assert "clinical policy v2" in gap.note and under.policy.version == 2
    assert applied(RULES, None) is RULES


def test_wai_sr_has_no_drop_until_a_clinic_signs_one_off_and_show_says_why() -> None:
    """WAI-SR has no published session-to-session drop and no sourced SD to derive one: show says there is none
    (the person-relative z still reads drops). A clinic that signs off 3 points gets them on the total and on
    every part; 0 and more than the range (48) are refused, 48 is allowed."""
    shown = {(v.rule, v.instrument, v.field): v for v in effective("a-clinic", None, RULES, REGISTRY).values}
    none = shown[("alliance_rupture", "waisr", "drop_points")]
    assert none.value is None and none.origin == "default" and "no session-to-session drop" in (none.note or "")
    assert shown[("alliance_rupture", "srs", "drop_points")].value == 1.0
    own = {"instruments": {"waisr": {"alliance_rupture": {"drop_points": 3}}}}
    assert problems(own) == [] and problems({"instruments": {"waisr": {"alliance_rupture": {"drop_points": 48}}}}) \
        == []
    assert "a number above 0 up to 48" in problems({"instruments": {"waisr": {"alliance_rupture": {
        "drop_points": 0}}}})[0]
    assert problems({"instruments": {"waisr": {"alliance_rupture": {"drop_points": 48.5}}}})[0].startswith(
        "instruments.waisr.alliance_rupture.drop_points: 48.5 is outside")
    under = applied(RULES, policy("a-clinic", 1, own)).alliance_rupture
    assert under.drop_points("waisr") == 3 == under.drop_points("waisr:bond")
    assert RULES.alliance_rupture.drop_points("waisr:bond") is None, "the shared rules are untouched"


def test_a_policy_file_is_read_from_toml_or_json_and_a_stray_key_is_named(tmp_path: Path) -> None:
    toml = tmp_path / "policy.toml"
    toml.write_text('[instruments.gad7.not_on_track]\ncaseness = 10\n')
    as_json = tmp_path / "policy.json"
    as_json.write_text(json.dumps(US_CASENESS))
    assert read_file(toml).instruments == read_file(as_json).instruments == {"gad7": {"not_on_track": {"caseness": 10}}}
    stray = tmp_path / "stray.toml"
    stray.write_text('[rule.not_on_track]\nenabled = false\n')
    with pytest.raises(PolicyError) as refused:
        read_file(stray)
    assert [p.where for p in refused.value.problems] == ["rule"]


def test_on_a_measure_where_higher_is_better_the_clinical_range_is_below_the_tenants_cutoff() -> None:
    """ORS: a clinic that counts clients below 28 (rather than the registry's 25) as still in the clinical range."""
    under = applied(RULES, policy("ors-clinic", 1, {"instruments": {"ors": {"not_on_track": {"caseness": 28}}}}))
    context = Context(under, 6, instruments=REGISTRY)

    def ors(total: float) -> ScoreComputed:
        scored = Scored(instrument="ors", instrument_version="1", kind="outcome", better="higher", total=total,
                        total_min=0, total_max=40, caseness=total < 25, risk_checked=True)
        return ScoreComputed(tenant="ors-clinic", submission_id="s", revision=1, client_id="client-sky",
                             episode_id="ep", administered_at=T0, score=scored, parameters={"caseness_cutoff": 25})

    assert [context.in_clinical_range(ors(t)) for t in (27.9, 28.0)] == [True, False]
    assert context.caseness_cutoff(ors(27.9)) == 28
    default = Context(RULES, 6, instruments=REGISTRY)
    assert [default.in_clinical_range(ors(t)) for t in (24.9, 27.9)] == [True, False], "scoring's, unchanged"
