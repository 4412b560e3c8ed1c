"""Outcome rules: reliable deterioration (with possible sudden loss) and not on track (checkpoints)."""

from __future__ import annotations

from rapport.services.alerts.rules.conditions import Clearing, Context, Finding, Verdict, evidence, number, points
from rapport.services.alerts.rules.state import AlertKey, EpisodeState, SuddenLoss
from rapport.shared.contracts.alert import Severity
from rapport.shared.contracts.score import ScoreComputed


class ReliableDeteriorations:
    """Worse than baseline by the reliable-change value; or a possible sudden loss.

    The reliable-change decision is scoring's (ChangeFromBaseline.reliable, Jacobson & Truax or the
    published fixed values such as PHQ-9 6 [R56][R80]). A sudden loss mirrors Tang & DeRubeis [R81]:
    (1) a session-to-session worsening of at least the reliable-change value, (2) at least 25% of the
    pre-loss score, (3) the mean of up to 3 sessions before differs from the mean of 3 after. At the
    time of the loss the sessions after it have not happened, so only (1) and (2) are checked and the
    loss is called 'possible'. It keeps the alert open only while the score stays worse than the
    pre-loss score by the reliable-change value, a rough stand-in for (3). As in the standard criteria
    (`suddengains`: identify_sg_1to2 = FALSE [R81]), the step from the episode's first score to its
    second is not a sudden loss unless `sudden_loss_first_interval` says so.

    Runs only where change can be reliable (`Context.runs_change_rules`): not on an instrument without a
    reliable-change value, nor on a screener."""

    rule = "reliable_deterioration"

    def judge(self, score: ScoreComputed, before: EpisodeState, context: Context) -> Verdict:
        change = score.change
        if score.score.kind != "outcome" or change is None or not context.runs_change_rules(score):
            return Verdict()
        rule = context.rules.reliable_deterioration
        instrument = score.score.instrument
        name = context.rules.name(instrument)
        key = AlertKey("reliable_deterioration", instrument, None)
        total = score.score.total
        worse_by = 1.0 if score.score.better == "lower" else -1.0  # a worsening is positive
        rcv = change.reliable_change_value if change.reliable_change_value is not None else number(
            score.parameters.get("reliable_change"))
        series = before.series_of(instrument)
        previous = series.previous
        deteriorated = change.reliable == "deteriorated"
        loss: SuddenLoss | None = None
        # series.count scores came before this one: 1 means the step from the first score to the second
        first_interval = series.count < 2 and not rule.parameters.sudden_loss_first_interval.value
        if rcv is not None and previous is not None and not first_interval:
            worsening = (total - previous) * worse_by
            fraction = rule.parameters.sudden_loss_fraction.value
            if worsening >= rcv and worsening >= fraction * abs(previous):
                loss = SuddenLoss(submission_id=score.submission_id, pre_loss=previous, reliable_change=rcv)
        standing = before.sudden_losses.get(instrument)
        still_lost = standing is not None and (total - standing.pre_loss) * worse_by >= standing.reliable_change
        if not (deteriorated or loss or still_lost):
            return Verdict(clearings=[Clearing(key, "no_longer_deteriorated",
                                               f"{name} {points(total)}, no longer reliably worse")])
        if not (deteriorated or loss):
            return Verdict()  # an earlier possible loss still stands; nothing new to add
        reasons: list[str] = []
        severity: Severity = rule.severity.sudden_loss
        if deteriorated:
            severity = rule.severity.deteriorated
            rc = f" (reliable change {points(rcv)})" if rcv is not None else ""
            reasons.append(f"{change.change_from_baseline:+g} from baseline {points(change.baseline_total)}{rc}")
        if loss is not None:
            since = f"{total - loss.pre_loss:+g} since last session"
            reasons.append(f"possible sudden loss, {since}" if deteriorated else since)
        title = "Reliable deterioration" if deteriorated else "Possible sudden loss"
        summary = f"{title} on {name}: {points(total)}, " + "; ".join(reasons)
        values = {"baseline": change.baseline_total, "previous": previous, "reliable_change": rcv,
                  "change_from_baseline": change.change_from_baseline, "session": context.session,
                  "sudden_loss": loss is not None,
                  "sudden_loss_criteria": "1 and 2 of 3 (the sessions after are not known yet)" if loss else None}
        return Verdict(findings=[Finding(key, severity, evidence(context, rule, score, summary, values), rule.prompt,
                                         sudden_loss=loss)])


class NotOnTrackCheckpoints:
    """Still in the clinical range with no reliable improvement by session N ('at risk') or M
    ('stalled'), after the PCOMS checkpoint windows [R33]. The rational fallback of anchors §3.3 (a);
    an expected-trajectory check would be another Check producing the same alert kind.

    Only where improvement can be reliable (`Context.runs_change_rules`): without a reliable-change
    value (K10) no improvement ever counts, so the rule would fire on every client still in the
    clinical range, however far they had come (45 -> 21). It says nothing there, nor on a screener.

    The clinical range is read with the tenant's caseness cutoff where its clinical policy sets one (GAD-7 10
    outside NHS Talking Therapies), else with the registry's that scoring applied."""

    rule = "not_on_track"

    def judge(self, score: ScoreComputed, before: EpisodeState, context: Context) -> Verdict:
        change = score.change
        caseness = context.in_clinical_range(score)
        if score.score.kind != "outcome" or change is None or caseness is None \
                or not context.runs_change_rules(score):
            return Verdict()
        rule = context.rules.not_on_track
        instrument = score.score.instrument
        name = context.rules.name(instrument)
        key = AlertKey("not_on_track", instrument, None)
        if change.reliable == "improved":
            return Verdict(clearings=[Clearing(key, "back_on_track", f"{name} {points(score.score.total)}, "
                                                                     "reliably improved from baseline")])
        if caseness is False:
            return Verdict(clearings=[Clearing(key, "back_on_track", f"{name} {points(score.score.total)}, "
                                                                     "out of the clinical range")])
        at_risk, stalled = rule.parameters.at_risk_session.value, rule.parameters.stalled_session.value
        session = context.session
        if session < at_risk:
            return Verdict()
        is_stalled = session >= stalled
        title = "Stalled" if is_stalled else "Not on track"
        summary = (f"{title} on {name} at session {session}: {points(score.score.total)}, still in the clinical "
                   f"range, no reliable improvement from baseline {points(change.baseline_total)}")
        values = {"session": session, "checkpoint": stalled if is_stalled else at_risk,
                  "baseline": change.baseline_total, "status": "stalled" if is_stalled else "at risk",
                  "caseness_cutoff": context.caseness_cutoff(score), "at_risk_session": at_risk,
                  "stalled_session": stalled}
        severity = rule.severity.stalled if is_stalled else rule.severity.at_risk
        return Verdict(findings=[Finding(key, severity, evidence(context, rule, score, summary, values), rule.prompt)])
