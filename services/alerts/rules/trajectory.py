"""Not on track by the expected trajectory: the clinic's own clients, by intake band and session.

An expected-treatment-response (ETR) curve conditioned on intake, after Finch, Lambert & Schaalje
(intake severity x session, tolerance band around the expected score) and the empirical rule of
clinical-anchors §5: a score worse than the given percentile of the scores this clinic's clients
with the same intake band had at the same session is off track [R6][R7][R21].

`fit` is pure: it takes each episode's series of one instrument (session number, total, in session
order) and returns a `TrajectoryFit`: per intake band and session, how many episodes, the expected
(mean) score and the boundary (the percentile on the worse side). A cell with fewer episodes than
`min_episodes` is left out, and where there is no cell the checkpoint rule (outcome.py) stands alone.
`rapport trajectories fit` runs it over the stored scores; the alerts service reads the latest fit.

`ExpectedTrajectory` is the check: it looks up the cell of the score's intake band and session, and
finds 'off the expected trajectory' beyond the boundary, or clears the not_on_track alert (back on
track) within it. Cost per score is a dictionary lookup, whatever the history."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from rapport.services.alerts.rules.conditions import Clearing, Context, Finding, Verdict, evidence, points
from rapport.services.alerts.rules.state import AlertKey, EpisodeState
from rapport.shared.contracts.score import ScoreComputed

METHOD = "empirical percentile of the clinic's scores by intake band and session"


class IntakeBand(BaseModel):
    """A band of intake (baseline) scores: from `min` up to the next band's `min`."""

    model_config = ConfigDict(frozen=True)

    label: str
    min: float


class Cell(BaseModel):
    model_config = ConfigDict(frozen=True)

    band: str
    session: int = Field(ge=2)
    episodes: int
    expected: float = Field(description="mean score at this session")
    boundary: float = Field(description="the percentile on the worse side: beyond it is off track")


class TrajectoryFit(BaseModel):
    """The expected trajectories of one instrument for one tenant, as `rapport trajectories fit` left them."""

    model_config = ConfigDict(frozen=True)

    tenant: str
    instrument: str
    better: Literal["lower", "higher"]
    fitted_at: datetime
    method: str = METHOD
    percentile: float
    min_episodes: int
    max_session: int
    episodes: int = Field(description="episodes with a baseline and at least one later score")
    bands: list[IntakeBand]
    cells: list[Cell]
    _by_cell: dict[tuple[str, int], Cell] = PrivateAttr(default_factory=dict)  # built once; never model_copy

    def model_post_init(self, context: object, /) -> None:
        self._by_cell.update({(c.band, c.session): c for c in self.cells})

    def band_of(self, intake: float) -> IntakeBand | None:
        found = [b for b in self.bands if b.min <= intake]
        return found[-1] if found else None

    def cell(self, intake: float, session: int) -> Cell | None:
        band = self.band_of(intake)
        if band is None:
            return None
        return self._by_cell.get((band.label, session))

    def worse(self, score: float, boundary: float) -> bool:
        return score > boundary if self.better == "lower" else score < boundary


Series = Sequence[tuple[int, float]]  # (session number, total) of one episode, baseline first


def fit(series: Iterable[Series], *, tenant: str, instrument: str, better: Literal["lower", "higher"],
        bands: Sequence[IntakeBand], percentile: float, min_episodes: int, max_session: int,
        fitted_at: datetime) -> TrajectoryFit:
    """Per intake band and session 2..max_session: the mean and the worse-side percentile of the scores."""
    ordered = sorted(bands, key=lambda b: b.min)
    shell = TrajectoryFit(tenant=tenant, instrument=instrument, better=better, fitted_at=fitted_at,
                          percentile=percentile, min_episodes=min_episodes, max_session=max_session,
                          episodes=0, bands=ordered, cells=[])
    at: dict[tuple[str, int], dict[int, float]] = {}  # cell -> episode -> its score there (the last one)
    used = 0
    for n, points_ in enumerate(series):
        if len(points_) < 2:
            continue
        band = shell.band_of(points_[0][1])
        if band is None:
            continue
        used += 1
        for session, total in points_[1:]:
            if 2 <= session <= max_session:
                at.setdefault((band.label, session), {})[n] = total
    cells = []
    worse_side = percentile if better == "lower" else 1 - percentile
    for (label, session), by_episode in sorted(at.items(), key=lambda kv: (_rank(ordered, kv[0][0]), kv[0][1])):
        values = sorted(by_episode.values())
        if len(values) < min_episodes:
            continue
        boundary = _quantile(values, worse_side)
        cells.append(Cell(band=label, session=session, episodes=len(values),
                          expected=round(statistics.fmean(values), 2), boundary=round(boundary, 2)))
    return TrajectoryFit.model_validate({**shell.model_dump(), "episodes": used, "cells": cells})


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (as numpy's default and R's type 7)."""
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _rank(bands: Sequence[IntakeBand], label: str) -> int:
    return next(i for i, b in enumerate(bands) if b.label == label)


class ExpectedTrajectory:
    """The expected-trajectory not_on_track rule; says nothing for an instrument without a fit."""

    rule = "expected_trajectory"

    def judge(self, score: ScoreComputed, before: EpisodeState, context: Context) -> Verdict:
        change = score.change
        trajectory = context.trajectories.get(score.score.instrument)
        if score.score.kind != "outcome" or change is None or trajectory is None \
                or not context.runs_trajectory_rule(score):  # a screener: a fit stored before it was one
            return Verdict()
        cell = trajectory.cell(change.baseline_total, context.session)
        if cell is None:
            return Verdict()
        rule = context.rules.expected_trajectory
        name = context.rules.name(score.score.instrument)
        key = AlertKey("not_on_track", score.score.instrument, None)
        total = score.score.total
        if not trajectory.worse(total, cell.boundary):
            return Verdict(clearings=[Clearing(key, "back_on_track", (
                f"{name} {points(total)} at session {context.session}: within the expected range for a "
                f"{cell.band} intake (boundary {points(cell.boundary)})"))])
        summary = (f"Off the expected trajectory on {name} at session {context.session}: {points(total)}, worse "
                   f"than {round(trajectory.percentile * 100)}% of this clinic's clients with a {cell.band} intake "
                   f"(expected {points(cell.expected)})")
        values = {"session": context.session, "baseline": change.baseline_total, "intake_band": cell.band,
                  "expected": cell.expected, "boundary": cell.boundary, "percentile": trajectory.percentile,
                  "episodes_in_cell": cell.episodes, "fitted_at": trajectory.fitted_at.isoformat(),
                  "method": trajectory.method, "status": "off trajectory"}
        return Verdict(findings=[Finding(key, rule.severity, evidence(context, rule, score, summary, values),
                                         rule.prompt)])


NO_TRAJECTORIES: Mapping[str, TrajectoryFit] = {}
