"""`rapport evaluate`: each alert rule's precision, recall and lead time against a synthetic cohort
whose ground truth is planted, and the time from a triggering submission to its alert.

1. A history cohort (other clients, other seed) goes through the embedded stack, and
   `rapport trajectories fit` is run on what was stored, so the expected-trajectory rule has a fit.
2. The evaluation cohort goes through session by session, as a clinic's weeks would: every client's
   session 1, wait for all to be evaluated, then session 2, ...
3. Every rule that put evidence into an alert for a client counts as flagging that client (a rule
   may fire inside an alert another rule raised). A flag is a true positive when the cohort planted
   that alert kind for the client; lead = planted session minus the first session the rule flagged
   (positive: earlier than planted).

The cohort plants exactly what the rules were written for, so 1.00 says the rules do what they say,
not that they are right about real clients. `run_cohort` scores them on data they were not written
for instead: a clinic's labelled cohort (`--cohort FILE`, rapport.labelled_cohort) or one drawn from
published recovery curves (`--curves`, rapport.recovery_curves), through the same stack."""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rapport.bench import percentile
from rapport.cohort import Cohort, build_cohort
from rapport.journeys import Journey, Journeys
from rapport.labelled_cohort import RULE_KINDS, LabelledCohort, alerts_per_100_sessions, score_against_labels
from rapport.recovery_curves import TrueCourse
from rapport.services.alerts.rules.trajectory import FittedTrajectory, MixedModelFit, Series
from rapport.services.alerts.trajectory_model import Unfitted
from rapport.shared.settings import Settings
from rapport.stack import Stack
from rapport.trajectories import fit_stored


@dataclass(frozen=True)
class RuleFigures:
    rule: str
    kind: str
    planted: int
    flagged: int
    precision: float | None  # None: the rule flagged nobody
    recall: float
    median_lead_sessions: float | None


def score_rules(cohort: Cohort, alert_events: list[dict[str, Any]]) -> dict[str, RuleFigures]:
    first_flag: dict[tuple[str, str], int] = {}  # (rule, client) -> first session with its evidence
    clients = set(cohort.storylines)
    for event in alert_events:
        alert = event["data"]["alert"]
        if alert["client_id"] not in clients:
            continue
        for found in alert["evidence"]:
            key = (found["rule_id"], alert["client_id"])
            session = int(found["values"].get("session") or 0)
            first_flag[key] = min(first_flag.get(key, session), session)
    planted: dict[str, dict[str, int]] = {}
    for p in cohort.planted:
        planted.setdefault(p.kind, {}).setdefault(p.client_id, p.session)
    figures = {}
    for rule, kind in RULE_KINDS.items():
        truth = planted.get(kind, {})
        flagged = {client: session for (r, client), session in first_flag.items() if r == rule}
        hits = [c for c in flagged if c in truth]
        leads = [truth[c] - flagged[c] for c in hits]
        figures[rule] = RuleFigures(
            rule=rule, kind=kind, planted=len(truth), flagged=len(flagged),
            precision=len(hits) / len(flagged) if flagged else None,
            recall=len(hits) / len(truth) if truth else 1.0,
            median_lead_sessions=statistics.median(leads) if leads else None,
        )
    return figures


def alert_latencies_ms(journeys: Iterable[Journey]) -> list[float]:
    """Publish-to-evaluated time of each submission that raised an alert, sorted."""
    return sorted(j.latency * 1000 for j in journeys
                  if j.latency is not None and any(e["data"]["transition"] == "raised" for e in j.alerts))


def run_evaluation(settings: Settings | None, *, clients: int, sessions: int, seed: int,
                   history_clients: int) -> dict[str, Any]:
    tenant = f"evaluate-{uuid.uuid4().hex[:8]}"  # a fresh tenant: a shared database keeps earlier runs apart
    os.environ["RAPPORT_LICENSED_INSTRUMENTS"] = f"{tenant}:srs,ors"
    os.environ["RAPPORT_TRAJECTORY_REFRESH_SECONDS"] = "0"  # use the fit as soon as it is stored
    with tempfile.TemporaryDirectory(prefix="rapport-evaluate-") as scratch:
        settings = settings or Settings(data_dir=Path(scratch))
        history = build_cohort(tenant, history_clients, sessions, seed + 1, first=clients + 1)
        cohort = build_cohort(tenant, clients, sessions, seed)
        started = time.perf_counter()
        with Stack(settings, banner=sys.stderr) as stack:  # stdout carries the report alone (--json: for jq)
            report = asyncio.run(_evaluate(stack.broker_url, stack.client_settings(tenant),
                                           stack.database_urls["alerts"], tenant, history, cohort))
        report["seconds"] = round(time.perf_counter() - started, 1)
    return report


async def _evaluate(broker_url: str, signed_in: Settings, database_url: str, tenant: str, history: Cohort,
                    cohort: Cohort) -> dict[str, Any]:
    journeys = await Journeys.connect(broker_url, tenant, signed_in)
    try:
        await _all_done([await journeys.submit(a.body) for a in history.administrations])
        fits = await fit_stored(database_url, [tenant])
        journeys.alert_events.clear()
        measured: list[Journey] = []
        for session in range(1, max(a.session for a in cohort.administrations) + 1):
            wave = [await journeys.submit(a.body) for a in cohort.administrations if a.session == session]
            await _all_done(wave)
            measured += wave
    finally:
        await journeys.close()
    latencies = alert_latencies_ms(measured)
    figures = score_rules(cohort, journeys.alert_events)
    return {
        "tenant": tenant,
        "history_clients": len(history.storylines), "clients": len(cohort.storylines),
        "administrations": len(cohort.administrations),
        "fits": [fit_summary(f) for f in fits],
        "rules": {rule: asdict(f) for rule, f in figures.items()},
        "alert_latency_ms": _percentiles(latencies),
    }


def fit_summary(fit: MixedModelFit | Unfitted) -> dict[str, Any]:
    if isinstance(fit, Unfitted):
        return {"instrument": fit.instrument, "episodes": fit.episodes, "stored": False, "reason": fit.reason}
    return {"instrument": fit.instrument, "episodes": fit.episodes, "stored": True, "method": fit.method,
            "observations": fit.observations, "sessions": [fit.first_session, fit.last_session]}


def _fit_line(f: dict[str, Any]) -> str:
    if not f["stored"]:
        return f"  expected trajectories: {f['instrument']} not fitted ({f['reason']}): only the checkpoint rule runs"
    return (f"  expected trajectories: {f['instrument']} mixed model fitted on {f['episodes']} episodes "
            f"({f['observations']} scores, sessions {f['sessions'][0]}-{f['sessions'][1]})")


async def _all_done(journeys: list[Journey]) -> None:
    await asyncio.wait_for(asyncio.gather(*(j.done.wait() for j in journeys)), 120)


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"count": len(values), "p50": round(percentile(values, 0.5), 1), "p95": round(percentile(values, 0.95), 1),
            "max": round(max(values), 1)}


def describe(report: dict[str, Any]) -> str:
    lines = [f"Rapport evaluate: {report['clients']} synthetic clients ({report['administrations']} administrations, "
             f"session by session) after {report['history_clients']} history clients, in {report['seconds']}s"]
    lines += [_fit_line(f) for f in report["fits"]]
    lines.append(f"  {'rule':<24} {'alert kind':<24} {'planted':>7} {'flagged':>7} {'precision':>9} {'recall':>6} "
                 f"{'lead (sessions)':>15}")
    for f in report["rules"].values():
        lead = "-" if f["median_lead_sessions"] is None else f"{f['median_lead_sessions']:+g}"
        precision = "-" if f["precision"] is None else f"{f['precision']:.2f}"
        lines.append(f"  {f['rule']:<24} {f['kind']:<24} {f['planted']:>7} {f['flagged']:>7} "
                     f"{precision:>9} {f['recall']:>6.2f} {lead:>15}")
    latency = report["alert_latency_ms"]
    if latency:
        lines.append(f"  time from a triggering submission to its alert: p50 {latency['p50']:g} ms, "
                     f"p95 {latency['p95']:g} ms, max {latency['max']:g} ms ({latency['count']} submissions)")
    lines.append("  The cohort plants what the rules look for: these figures check the rules do what they say,"
                 " not how they do on real clients.")
    return "\n".join(lines)


def run_cohort(settings: Settings | None, cohort: LabelledCohort, *, history: LabelledCohort | None = None,
               source: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A labelled cohort (`--cohort FILE`, or the recovery-curve cohort of `--curves`) through the embedded
    stack session by session, after an optional history cohort the expected trajectories are fitted on;
    each rule scored against the cohort's labels (rapport.labelled_cohort)."""
    tenant = f"evaluate-{uuid.uuid4().hex[:8]}"
    os.environ["RAPPORT_LICENSED_INSTRUMENTS"] = f"{tenant}:srs,ors,waisr,sai"  # the clinic brings its own
    os.environ["RAPPORT_TRAJECTORY_REFRESH_SECONDS"] = "0"
    with tempfile.TemporaryDirectory(prefix="rapport-evaluate-") as scratch:
        settings = settings or Settings(data_dir=Path(scratch))
        started = time.perf_counter()
        with Stack(settings, banner=sys.stderr) as stack:
            report = asyncio.run(_run_cohort(stack.broker_url, stack.client_settings(tenant),
                                             stack.database_urls["alerts"], tenant, cohort, history))
        report["seconds"] = round(time.perf_counter() - started, 1)
    return {"source": source, **(extra or {}), **report}


async def _run_cohort(broker_url: str, signed_in: Settings, database_url: str, tenant: str, cohort: LabelledCohort,
                      history: LabelledCohort | None) -> dict[str, Any]:
    journeys = await Journeys.connect(broker_url, tenant, signed_in)
    fits = []
    rejected: list[int] = []
    try:
        if history is not None:
            for wave in history.waves():
                await _all_done([await journeys.submit(s.body) for s in wave])
            fits = await fit_stored(database_url, [tenant])
            journeys.alert_events.clear()
        for wave in cohort.waves():
            sent = [(s, await journeys.submit(s.body)) for s in wave]
            await _all_done([j for _, j in sent])
            rejected += [s.line for s, j in sent
                         if any(a["kind"] == "rapport.submission.rejected.v1" for a in j.answers)]
    finally:
        await journeys.close()
    return {
        "tenant": tenant, "description": cohort.description,
        "history_clients": len({(s.client_id, s.episode_id) for s in history.submissions}) if history else 0,
        "episodes": len({(s.client_id, s.episode_id) for s in cohort.submissions}),
        "submissions": len(cohort.submissions), "sessions": cohort.sessions, "labels": len(cohort.labels),
        "rejected_lines": rejected,
        "fits": [fit_summary(f) for f in fits],
        "rules": {rule: asdict(s) for rule, s in score_against_labels(cohort, journeys.alert_events).items()},
        "all_alerts_per_100_sessions": alerts_per_100_sessions(cohort, journeys.alert_events),
    }


def describe_cohort(report: dict[str, Any]) -> str:
    lines = [f"Rapport evaluate ({report['source']}): {report['episodes']} episodes, {report['sessions']} sessions, "
             f"{report['labels']} labels, after {report['history_clients']} history clients, in {report['seconds']}s"]
    if report["rejected_lines"]:
        lines.append(f"  rejected by ingest: {len(report['rejected_lines'])} submissions (lines "
                     f"{', '.join(map(str, report['rejected_lines'][:10]))})")
    lines += [_fit_line(f) for f in report["fits"]]
    if not report["fits"]:
        lines.append("  expected trajectories: no fit (no history cohort), so that rule cannot speak")
    lines.append(f"  {'rule':<24} {'alert kind':<24} {'labelled':>8} {'flagged':>7} {'precision':>9} {'recall':>6} "
                 f"{'lead (sessions)':>15} {'alerts/100 sessions':>19}")
    for f in report["rules"].values():
        lead = "-" if f["median_lead_sessions"] is None else f"{f['median_lead_sessions']:+g}"
        if f["median_lead_days"] is not None:
            lead += f" ({f['median_lead_days']:+g} d)"
        precision = "-" if f["precision"] is None else f"{f['precision']:.2f}"
        recall = "-" if f["recall"] is None else f"{f['recall']:.2f}"
        lines.append(f"  {f['rule']:<24} {f['kind']:<24} {f['labelled']:>8} {f['flagged']:>7} {precision:>9} "
                     f"{recall:>6} {lead:>15} {f['alerts_per_100_sessions']:>19g}")
    for f in report["rules"].values():
        if f["unlabelled_by_finding"]:
            said = ", ".join(f"{title} {n}" for title, n in f["unlabelled_by_finding"].items())
            lines.append(f"  {f['rule']} flagged {sum(f['unlabelled_by_finding'].values())} episodes with no label: "
                         f"{said}")
    lines.append(f"  every alert, any rule: {report['all_alerts_per_100_sessions']:g} per 100 sessions")
    lines.append("  lead: labelled session minus the rule's first evidence (positive: before the labelled point)")
    lines += describe_curve_calibration(report.get("calibration") or [])
    return "\n".join(lines)


def describe_curve_calibration(calibrations: list[dict[str, Any]]) -> list[str]:
    """Both methods' held-out calibration, session by session: attending, and had everyone attended."""
    if not calibrations:
        return []
    lines = ["  calibration: share of the evaluated clients beyond each method's boundary (fitted on the history "
             "cohort; nominal " + f"{calibrations[0]['nominal']:.0%})"]
    for c in calibrations:
        lines.append(f"  {c['instrument']}: mixed model {'fitted' if c['mixed_model'] else 'not fitted'}; "
                     "columns: attending (had all attended)")
        lines.append(f"    {'session':>7} {'mixed model':>24} {'per-cell percentiles':>24}")
        mixed = c["mixed_model"] or {"attending": [], "complete": []}
        rows: dict[int, list[str]] = {}
        for column, method in enumerate((mixed, c["cells"])):
            for part in ("attending", "complete"):
                for r in method[part]:
                    cell = rows.setdefault(r["session"], ["-", "-", "-", "-"])
                    cell[column * 2 + (part == "complete")] = "-" if r["share"] is None else f"{r['share']:.0%}"
        for session, cell in sorted(rows.items()):
            lines.append(f"    {session:>7} {cell[0] + ' (' + cell[1] + ')':>24} {cell[2] + ' (' + cell[3] + ')':>24}")
    return lines


def read_cohort_file(path: Path) -> LabelledCohort:
    """The clinic's file, every line checked (CohortError names each line and field) before anything runs."""
    from datetime import UTC, datetime

    from rapport.labelled_cohort import read_cohort

    with path.open(encoding="utf-8") as lines:
        return read_cohort(lines, now=datetime.now(UTC))


def curve_cohorts(clients: int, history_clients: int, seed: int, *, early_endings: bool = False
                  ) -> tuple[LabelledCohort, LabelledCohort, dict[str, Any]]:
    """The recovery-curve cohort, its history cohort (other clients, other seed) and what the report says
    about how they were made, with both trajectory methods' calibration on them."""
    from rapport.recovery_curves import build_curve_cohort, parameters_table

    cohort, courses = build_curve_cohort(clients, seed, early_endings=early_endings)
    history, earlier = build_curve_cohort(history_clients, seed + 1, first=clients + 1, early_endings=early_endings)
    truth = {"clients": clients, "deteriorating": sum(c.deteriorates for c in courses),
             "ending_without_reliable_improvement_in_clinical_range": sum(c.failed for c in courses),
             "ending_early": sum(c.ends_at < len(c.observed) for c in courses)}
    return cohort, history, {"seed": seed, "early_endings": early_endings, "truth": truth,
                             "calibration": curve_calibration(earlier, courses), "parameters": parameters_table()}


def curve_calibration(history: list[TrueCourse], evaluated: list[TrueCourse]) -> list[dict[str, Any]]:
    """Per instrument, both methods fitted on the history cohort's attended sessions (what a clinic has) and
    judged on the evaluated clients (other clients, other seed: held out by construction): over the
    sessions they attended, and over every session as if they had attended all of them (the population a
    new episode's boundary describes; only a simulation can know it)."""
    from datetime import UTC, datetime

    from rapport.services.alerts.rules import load_ruleset
    from rapport.services.alerts.rules.trajectory import fit
    from rapport.services.alerts.trajectories import intake_bands
    from rapport.services.alerts.trajectory_model import calibration, calibration_table, fit_mixed
    from rapport.shared.instruments import load_registry

    registry, p = load_registry(), load_ruleset().expected_trajectory.parameters
    found = []
    for instrument_id in sorted({c.instrument for c in history}):
        instrument = registry.get(instrument_id)
        assert instrument is not None
        fitting = [c.attended() for c in history if c.instrument == instrument_id]
        judged = [c for c in evaluated if c.instrument == instrument_id]
        bands, now = intake_bands(instrument), datetime.now(UTC)
        mixed = fit_mixed(fitting, tenant="evaluate", instrument=instrument_id, better=instrument.better, bands=bands,
                          percentile=p.percentile.value, min_episodes=p.min_episodes.value,
                          max_session=p.max_session.value, fitted_at=now)
        cells = fit(fitting, tenant="evaluate", instrument=instrument_id, better=instrument.better, bands=bands,
                    percentile=p.percentile.value, min_episodes=p.min_episodes.value,
                    max_session=p.max_session.value, fitted_at=now)
        attending, complete = [c.attended() for c in judged], [c.complete() for c in judged]

        def table(f: FittedTrajectory, attending: Sequence[Series] = attending,
                  complete: Sequence[Series] = complete) -> dict[str, Any]:
            return {"attending": calibration_table(calibration(f, attending)),
                    "complete": calibration_table(calibration(f, complete))}

        found.append({"instrument": instrument_id, "nominal": round(1 - p.percentile.value, 3),
                      "fitted_on": len(fitting), "judged": len(judged),
                      "mixed_model": table(mixed) if isinstance(mixed, MixedModelFit) else None,
                      "cells": table(cells)})
    return found
