"""`rapport submit`: publish files and print what Rapport answered to each; with --http, send them
through the running gateway as a clinic system would (the answer only: the score and the alerts
come as broker events, which an HTTP caller does not see)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx

from rapport.journeys import Journey, Journeys
from rapport.shared.messaging.resend import StoreUnknown
from rapport.shared.settings import Settings


async def submit_files(broker_url: str, tenant: str, files: list[Path], wait_seconds: float,
                       settings: Settings | None = None) -> bool:
    journeys = await Journeys.connect(broker_url, tenant, settings)
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


# over HTTP

def endpoint_for(body: bytes) -> tuple[str, str]:
    """Where a file goes and as what: a FHIR resource to the endpoint of its type (a Bundle to the
    base; the gateway refuses a type it does not take), the native JSON to /api/v1/submissions."""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(kind := document.get("resourceType"), str) and kind.isalnum():
        return ("/fhir" if kind == "Bundle" else f"/fhir/{kind}"), "application/fhir+json"
    return "/api/v1/submissions", "application/json"


async def _native_answer(http: httpx.AsyncClient, message_id: str, deadline: float) -> dict[str, Any] | None:
    """The message's answers in the native shape, from its poll URL: the gateway's stored answer
    can come a moment after the live one, so a 202 is asked again until the deadline."""
    while True:
        response = await http.get(f"/api/v1/messages/{message_id}")
        if response.status_code == 200:
            answer: dict[str, Any] = response.json()
            return answer
        if response.status_code != 202 or time.monotonic() >= deadline:
            return None
        await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))  # polling the gateway, as asked


def describe_native(answer: dict[str, Any]) -> list[str]:
    """The lines `describe` prints for an answer, from the native shape of an HTTP answer."""
    lines: list[str] = []
    for part in answer.get("answers", [answer]):
        if part["status"] == "rejected":
            lines.append(f"REJECTED {part.get('submission_id') or '(no id)'}")
            for p in part["problems"]:
                expected = f" (expected {p['expected']})" if p.get("expected") else ""
                lines.append(f"  - {p['field']}: {p['message']}{expected}")
            continue
        lines.append(f"ACCEPTED {part['submission_id']} ({part['instrument']}, revision {part['revision']}, "
                     f"{part['disposition']})")
        lines += [f"  warning {w['field']}: {w['message']}" for w in part.get("warnings", [])]
    return lines


def _refusal(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"refused {response.status_code}"
    words = [p["message"] for p in body.get("problems", [])] or [
        i.get("diagnostics", "") for i in body.get("issue", [])]
    return f"refused {response.status_code}: {'; '.join(words)}"


async def submit_files_http(gateway_url: str, bearer: str, files: list[Path], wait_seconds: float) -> bool:
    all_ok = True
    async with httpx.AsyncClient(base_url=gateway_url, headers={"Authorization": f"Bearer {bearer}"},
                                 timeout=wait_seconds + 10) as http:
        for path in files:
            body = path.read_bytes()
            endpoint, content_type = endpoint_for(body)
            deadline = time.monotonic() + wait_seconds
            try:
                response = await http.post(endpoint, content=body, headers={"Content-Type": content_type})
                message_id = response.headers.get("rapport-message-id")
                answer = await _native_answer(http, message_id, deadline) if message_id else None
            except httpx.HTTPError as error:
                print(f"{path}: the gateway at {gateway_url} did not answer ({type(error).__name__})")
                all_ok = False
                continue
            if message_id is None:
                print(f"{path}: {_refusal(response)}")
                all_ok = False
                continue
            if answer is None:
                print(f"{path}: no complete answer within {wait_seconds:.0f}s (poll /api/v1/messages/{message_id})")
                all_ok = False
                continue
            print(f"{path}:")
            for line in describe_native(answer):
                print(f"  {line}")
            all_ok &= all(part["status"] == "accepted" for part in answer.get("answers", [answer]))
    return all_ok
