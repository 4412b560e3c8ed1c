"""Precision and recall of each alert rule against what the synthetic cohort planted."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rapport.cohort import Cohort

KINDS = ("critical_item", "alliance_rupture", "reliable_deterioration", "not_on_track")


def score_rules(cohort: Cohort, alert_events: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """A raised alert is a true positive when its client had that kind planted; recall counts the
    planted (client, kind) pairs that got at least one alert of that kind."""
    raised: dict[str, set[str]] = defaultdict(set)
    for event in alert_events:
        if event["data"]["transition"] == "raised":
            alert = event["data"]["alert"]
            raised[alert["kind"]].add(alert["client_id"])
    planted: dict[str, set[str]] = defaultdict(set)
    for p in cohort.planted:
        planted[p.kind].add(p.client_id)
    figures = {}
    for kind in KINDS:
        hits = raised[kind] & planted[kind]
        figures[kind] = {
            "precision": len(hits) / len(raised[kind]) if raised[kind] else 1.0,
            "recall": len(hits) / len(planted[kind]) if planted[kind] else 1.0,
            "raised_for": float(len(raised[kind])),
            "planted": float(len(planted[kind])),
        }
    return figures
