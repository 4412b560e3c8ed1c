"""Where a new score sits in its episode's series: its baseline and the score before it.

The common case (scores arrive in administration order) needs only the compact summary; a late or
amended score needs the episode's stored points, and the summary is rebuilt from them. Placing it
also changes the scores after it: the next one has a new previous score, and when it is the new
first score every later one has a new baseline (`Placement.later`)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)  # which series: (tenant, client, episode, instrument) in scoring


@dataclass(frozen=True)
class Point:
    submission_id: str
    total: float
    at: datetime


@dataclass(frozen=True)
class Summary:
    baseline: Point
    latest: Point
    count: int


@dataclass(frozen=True)
class Replaced:
    """A later score whose baseline or previous score changed when an earlier one was placed."""

    point: Point
    baseline: Point
    previous: Point


@dataclass(frozen=True)
class Placement:
    baseline: Point | None  # None: this score is the episode's first
    previous: Point | None
    summary: Summary
    later: tuple[Replaced, ...] = ()


def follows(summary: Summary | None, point: Point) -> bool:
    """True when the compact summary is enough: the score comes after everything seen so far."""
    return summary is None or (point.at >= summary.latest.at and point.submission_id != summary.latest.submission_id)


def append(summary: Summary | None, point: Point) -> Placement:
    if summary is None:
        return Placement(baseline=None, previous=None, summary=Summary(point, point, 1))
    return Placement(
        baseline=summary.baseline, previous=summary.latest,
        summary=Summary(summary.baseline, point, summary.count + 1),
    )


def insert(points: Sequence[Point], point: Point) -> Placement:
    """Place a late or amended score among the stored points (which may hold its older revision)."""
    others = [p for p in points if p.submission_id != point.submission_id]
    ordered = sorted([*others, point], key=lambda p: (p.at, p.submission_id))
    index = ordered.index(point)
    summary = Summary(baseline=ordered[0], latest=ordered[-1], count=len(ordered))
    touched = range(index + 1, len(ordered) if index == 0 else min(index + 2, len(ordered)))
    later = tuple(Replaced(ordered[j], ordered[0], ordered[j - 1]) for j in touched)
    if index == 0:
        return Placement(baseline=None, previous=None, summary=summary, later=later)
    return Placement(baseline=ordered[0], previous=ordered[index - 1], summary=summary, later=later)


@dataclass(frozen=True)
class Arrival(Generic[K]):
    """A batch's score for series `key`; `new` when it is the submission's first revision."""

    key: K
    point: Point
    new: bool


def needing_points(summaries: Mapping[K, Summary], arrivals: Sequence[Arrival[K]]) -> set[K]:
    """The series whose stored points placing the batch will need (a late or amended score in them),
    so that they are read once for the whole batch."""
    running = dict(summaries)
    needed: set[K] = set()
    for arrival in arrivals:
        if arrival.key in needed:
            continue
        summary = running.get(arrival.key)
        if arrival.new and follows(summary, arrival.point):
            running[arrival.key] = append(summary, arrival.point).summary
        else:
            needed.add(arrival.key)
    return needed


def place_batch(summaries: Mapping[K, Summary], points: Mapping[K, Sequence[Point]],
                arrivals: Sequence[Arrival[K]]) -> list[Placement]:
    """Each arrival's placement, in order: appended to its series' summary when it comes after
    everything seen (this batch's earlier arrivals included), otherwise inserted among the stored
    points and this batch's earlier points of the series (`points`: at least the series
    `needing_points` names)."""
    running = dict(summaries)
    placed: dict[K, dict[str, Point]] = {}
    placements: list[Placement] = []
    for arrival in arrivals:
        summary = running.get(arrival.key)
        if arrival.new and follows(summary, arrival.point):
            placement = append(summary, arrival.point)
        else:
            if arrival.key not in points:
                raise KeyError("place_batch: the stored points of a series needing_points named were not given")
            stored = {p.submission_id: p for p in points[arrival.key]}
            placement = insert(list((stored | placed.get(arrival.key, {})).values()), arrival.point)
        placed.setdefault(arrival.key, {})[arrival.point.submission_id] = arrival.point
        running[arrival.key] = placement.summary
        placements.append(placement)
    return placements
