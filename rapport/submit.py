"""`rapport submit`: publish files and print what Rapport answered to each."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from rapport.journeys import Journey, Journeys
from rapport.shared.messaging.resend import StoreUnknown


async def submit_files(broker_url: str, tenant: str, files: list[Path], wait_seconds: float) -> bool:
    journeys = await Journeys.connect(broker_url, tenant)
    all_ok = True
    try:
        for path in files:
            try:
                journey = await journeys.submit(path.read_bytes())
            except StoreUnknown as unknown:
                print(f"{path}: {unknown}")
                all_ok = False
                continue
            try:
                await asyncio.wait_for(journey.done.wait(), wait_seconds)
            except TimeoutError:
                print(f"{path}: no complete answer within {wait_seconds:.0f}s (is the stack running?)")
                all_ok = False
                continue
            print(f"{path}:")
            for line in describe(journey):
                print(f"  {line}")
            all_ok &= all(a["kind"].endswith("accepted.v1") for a in journey.answers)
    finally:
        await journeys.close()
    return all_ok


def describe(journey: Journey) -> list[str]:
    lines: list[str] = []
    for answer in sorted(journey.answers, key=lambda a: a.get("inbound_part", 1)):
        if answer["kind"].endswith("rejected.v1"):
            lines.append(f"REJECTED {answer.get('submission_id') or '(no id)'}")
            for p in answer["problems"]:
                expected = f" (expected {p['expected']})" if p.get("expected") else ""
                lines.append(f"  - {p['field']}: {p['message']}{expected}")
            continue
        submission = answer["submission"]
        sid = submission["submission_id"]
        lines.append(f"ACCEPTED {sid} ({submission['instrument']}, revision {answer['revision']}, "
                     f"{answer['disposition']})")
        lines += [f"  warning {w['field']}: {w['message']}" for w in submission.get("warnings", [])]
        score = journey.scores.get(sid)
        if score:
            lines.append("  " + _score_line(score))
        evaluation = journey.evaluations.get(sid)
        if evaluation is not None:
            if not evaluation["transitions"]:
                lines.append("  no alert")
            for alert in (a for a in journey.alerts if a["data"]["alert"]["alert_id"] in evaluation["alert_ids"]):
                data = alert["data"]
                evidence = data["alert"]["evidence"][-1]["summary"] if data["alert"]["evidence"] else ""
                lines.append(f"  alert {data['transition']}: {data['alert']['kind']} ({data['alert']['severity']}) "
                             f"{evidence}")
    return lines


def _score_line(event: dict[str, Any]) -> str:
    score = event["score"]
    parts = [f"score {score['total']:g} ({score['total_min']:g}-{score['total_max']:g})"]
    if score.get("band"):
        parts.append(f"band {score['band']}")
    for name, value in score.get("subscales", {}).items():
        parts.append(f"{name} {value:g}")
    for crit in score.get("critical_items", []):
        parts.append(f"critical item {crit['item']} = {crit['value']:g}")
    if not score.get("risk_checked", True):
        parts.append("risk items NOT checked")
    change = event.get("change")
    if change:
        parts.append(f"{change['change_from_baseline']:+g} from baseline ({change['reliable']})")
    return ", ".join(parts)
