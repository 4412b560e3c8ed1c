"""`rapport demo`: the embedded stack, a synthetic cohort through the broker, a readable summary."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rapport.cohort import Cohort, build_cohort
from rapport.evaluate import alert_latencies_ms, score_rules
from rapport.journeys import Journeys
from rapport.shared.settings import Settings
from rapport.stack import Stack

TENANT = "demo"

# Three submissions clinic IT gets wrong, to show what a rejection says.
FAULTY = [
    {"submission_id": "bad-range", "instrument": "phq9", "client_id": "client-9001",
     "administered_at": "2026-03-02T10:00:00+00:00",
     "responses": {"1": 1, "2": 4, "3": 0, "4": 1, "5": 0, "6": 1, "7": 0, "8": 0, "9": 0}},
    {"submission_id": "bad-instrument", "instrument": "phq99", "client_id": "client-9002",
     "administered_at": "2026-03-02T10:00:00+00:00", "responses": {"1": 1}},
    {"submission_id": "bad-tenant", "tenant": "another-clinic", "instrument": "phq9", "client_id": "client-9003",
     "administered_at": "2026-03-02T10:00:00+00:00",
     "responses": {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0, "6": 0, "7": 0, "8": 0, "9": 0}},
]


def run_demo(settings: Settings | None, *, clients: int, sessions: int, seed: int, serve: bool = False) -> int:
    # The demo tenant declares an SRS licence, as a clinic with a PCOMS group licence would.
    os.environ["RAPPORT_LICENSED_INSTRUMENTS"] = f"{TENANT}:srs,ors"
    with tempfile.TemporaryDirectory(prefix="rapport-demo-") as scratch:
        settings = settings or Settings(data_dir=Path(scratch))
        cohort = build_cohort(TENANT, clients, sessions, seed)
        started = time.perf_counter()
        with Stack(settings) as stack:
            report = asyncio.run(_drive(stack.broker_url, stack.client_settings(TENANT), cohort))
            report["seconds"] = round(time.perf_counter() - started, 1)
            print(_summary(report), flush=True)
            if serve and report["complete"]:
                print("\n".join(_sign_in_lines(stack, report["events"])), flush=True)  # type: ignore[arg-type]
                stack.supervise()
        return 0 if report["complete"] else 1


# how long the demo's sign-in links can be opened: long enough to read the summary first
DEMO_LINK_TTL = timedelta(minutes=30)


def _sign_in_lines(stack: Stack, journeys: Journeys) -> list[str]:
    """`rapport demo --serve`: a login link for the therapist with the most open alerts, and one for a lead."""
    from rapport.services.gateway.signin import link_url, mint_link
    from rapport.services.gateway.tokens import load_signing_key

    gateway = next(s.url for s in stack.services if s.name == "gateway")
    latest: dict[str, dict[str, object]] = {}
    for event in journeys.alert_events:
        alert = event["data"]["alert"]
        latest[alert["alert_id"]] = alert
    open_by: Counter[str] = Counter(str(a["clinician_id"]) for a in latest.values()
                                    if a.get("status") != "resolved" and a.get("clinician_id"))
    key = load_signing_key(stack.settings.resolved_token_key_file())
    now = datetime.now(UTC)

    def link(role: str, clinician: str | None = None) -> str:
        return link_url(gateway, mint_link(key, tenant=TENANT, role=role, clinician=clinician,
                                           audience=stack.settings.oidc_audience, now=now, ttl=DEMO_LINK_TTL))

    lines = ["", "The stack keeps running with the demo's alerts; Ctrl-C stops it. Open within 30 minutes, once:"]
    if open_by:
        clinician, count = open_by.most_common(1)[0]
        lines.append(f"  therapist {clinician} ({count} open alerts)  {link('clinician', clinician)}")
    lines.append(f"  clinical lead                       {link('lead')}")
    lines.append(f"  more: rapport login-link --tenant {TENANT} --role clinician --clinician ID "
                 f"--data-dir {stack.data_dir}")
    return lines


async def _drive(broker_url: str, signed_in: Settings, cohort: Cohort) -> dict[str, object]:
    journeys = await Journeys.connect(broker_url, TENANT, signed_in)
    try:
        sent = [await journeys.submit(a.body) for a in cohort.administrations]
        sent += [await journeys.submit(json.dumps(f).encode()) for f in FAULTY]
        try:
            await asyncio.wait_for(asyncio.gather(*(j.done.wait() for j in sent)), 60)
            complete = True
        except TimeoutError:
            complete = False
        return {"journeys": sent, "events": journeys, "cohort": cohort, "complete": complete}
    finally:
        await journeys.close()


def _summary(report: dict[str, object]) -> str:
    journeys: Journeys = report["events"]  # type: ignore[assignment]
    cohort: Cohort = report["cohort"]  # type: ignore[assignment]
    answers = [a for j in journeys.by_message.values() for a in j.answers]
    accepted = [a for a in answers if a["kind"].endswith("accepted.v1")]
    rejected = [a for a in answers if a["kind"].endswith("rejected.v1")]
    bands: Counter[tuple[str, str]] = Counter()
    for j in journeys.by_message.values():
        for score in j.scores.values():
            bands[(score["score"]["instrument"], score["score"]["band"] or "-")] += 1
    raised: Counter[str] = Counter(
        e["data"]["alert"]["kind"] for e in journeys.alert_events if e["data"]["transition"] == "raised"
    )
    transitions: Counter[str] = Counter(e["data"]["transition"] for e in journeys.alert_events)
    lines = [
        "",
        f"Rapport demo: {len(cohort.storylines)} synthetic clients, {len(cohort.administrations)} administrations "
        f"+ {len(FAULTY)} faulty submissions, in {report['seconds']}s",
        f"  accepted  {len(accepted)}",
        f"  rejected  {len(rejected)}",
    ]
    for answer in rejected:
        problems = "; ".join(f"{p['field']}: {p['message']}" for p in answer["problems"])
        lines.append(f"    {answer.get('submission_id') or '?'}: {problems}")
    lines.append("  scores by band")
    for (instrument, band), n in sorted(bands.items()):
        lines.append(f"    {instrument:<6} {band:<20} {n}")
    lines.append("  alerts raised by kind")
    for kind, n in sorted(raised.items()):
        lines.append(f"    {kind:<24} {n}")
    lines.append("  alert transitions " + ", ".join(f"{k} {n}" for k, n in sorted(transitions.items())))
    lines.append(f"  notifications to clinicians {len(journeys.notifications)}")
    if journeys.notifications:
        example = journeys.notifications[0]["data"]
        lines.append(f"    e.g. {example['headline']} - {example['evidence']}")
    alerted = alert_latencies_ms(journeys.by_message.values())
    if alerted:
        lines.append(f"  time from a triggering submission to its alert: median {alerted[len(alerted) // 2]:.0f} ms, "
                     f"max {alerted[-1]:.0f} ms (the cohort is sent all at once)")
    lines.append("  rules against the planted storylines (precision / recall)")
    for rule, figures in score_rules(cohort, journeys.alert_events).items():
        if rule == "expected_trajectory" and not figures.flagged:
            lines.append(f"    {rule:<24} no fit in the demo: `rapport evaluate` fits one and scores it")
            continue
        precision = "-" if figures.precision is None else f"{figures.precision:.2f}"
        lines.append(f"    {rule:<24} {precision} / {figures.recall:.2f}")
    if not report["complete"]:
        lines.append("  NOT COMPLETE: some submissions got no final answer within 60s")
    return "\n".join(lines)
