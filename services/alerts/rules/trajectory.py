"""Not on track by the expected trajectory: the clinic's own clients, by intake and session.

An expected-treatment-response (ETR) curve conditioned on intake, after Finch, Lambert & Schaalje
(intake severity x session, tolerance band around the expected score) and the empirical rule of
clinical-anchors §5: a score worse than the given percentile of the scores expected of this clinic's
clients with the same intake at the same session is off track [R6][R7][R21].

`fit` is pure: it takes each episode's series of one instrument (session number, total, in session
order) and returns a `TrajectoryFit`: per intake band and session, how many episodes, the expected
(mean) score and the boundary (the percentile on the worse side). A cell with fewer episodes than
`min_episodes` is left out, and where there is no cell the checkpoint rule (outcome.py) stands alone.
That was the rule's fit until v3; it is kept to read the fits stored then and to calibrate against.

`ExpectedTrajectory` is the check: it asks the fit what it expects of the score's intake and session
(`at`: the cell, or the mixed model's prediction), and finds 'off the expected trajectory' beyond the
boundary, or clears the not_on_track alert (back on track) within it. Cost per score is a dictionary
lookup or a few multiplications, whatever the history.

Those per-session percentiles have a survivorship bias: a cell holds only the episodes that reached its
session, and improvers leave early, so later cells describe the non-responders and their boundary drifts
above intake. `MixedModelFit` is the fit over all episodes instead (services/alerts/trajectory_model.py
fits it): a linear mixed model of score on intake + log(session) + intake x log(session), with a random
intercept and a random log(session) slope per episode, after Finch, Lambert & Schaalje (mixed model on
log(session), intake as a continuous covariate) [R6]. It stores only the model's parameters; the expected
score of a new episode with intake x at session s is the fixed-effects prediction, and its boundary is that
plus z(percentile) standard deviations of a new episode's score there ([1, log s] G [1, log s]' + the
residual variance) on the worse side. Both kinds are stored as documents; `read_fit` tells them apart by
`method`, so a fit stored before the mixed model is still judged by its cells."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from statistics import NormalDist
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from rapport.services.alerts.rules.conditions import Clearing, Context, Finding, Verdict, evidence, points
from rapport.services.alerts.rules.state import AlertKey, EpisodeState
from rapport.shared.contracts.score import ScoreComputed

METHOD = "empirical percentile of the clinic's scores by intake band and session"
MIXED_MODEL = ("linear mixed model (REML) of score on intake x log(session), random intercept and log(session) "
               "slope per episode, over every episode's scores after intake (after Finch, Lambert & Schaalje)")


@dataclass(frozen=True)
class Expected:
    """What a fit expects of one score: the expected score and the boundary beyond which it is off track."""

    band: str | None  # the intake's band (the cell's, or for the mixed model the band its intake falls in)
    expected: float
    boundary: float
    episodes: int  # the cell's episodes, or every episode the mixed model was fitted on
    session: int  # the session the curve was read at (the mixed model clamps to the sessions it was fitted on)


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


class InstrumentFit(BaseModel):
    """What both kinds of expected trajectory say of themselves: whose, which instrument, which way is
    better, when fitted, and the rule's parameters they were fitted with."""

    model_config = ConfigDict(frozen=True)

    tenant: str
    instrument: str
    better: Literal["lower", "higher"]
    fitted_at: datetime
    percentile: float
    min_episodes: int
    max_session: int
    bands: list[IntakeBand] = Field(description="the instrument's intake bands")

    def band_of(self, intake: float) -> IntakeBand | None:
        found = [b for b in sorted(self.bands, key=lambda b: b.min) if b.min <= intake]
        return found[-1] if found else None

    def worse(self, score: float, boundary: float) -> bool:
        return score > boundary if self.better == "lower" else score < boundary


class TrajectoryFit(InstrumentFit):
    """The expected trajectories of one instrument for one tenant, as `rapport trajectories fit` left them."""

    method: str = METHOD
    episodes: int = Field(description="episodes with a baseline and at least one later score")
    cells: list[Cell]
    _by_cell: dict[tuple[str, int], Cell] = PrivateAttr(default_factory=dict)  # built once; never model_copy

    def model_post_init(self, context: object, /) -> None:
        self._by_cell.update({(c.band, c.session): c for c in self.cells})

    def cell(self, intake: float, session: int) -> Cell | None:
        band = self.band_of(intake)
        if band is None:
            return None
        return self._by_cell.get((band.label, session))

    def at(self, intake: float, session: int) -> Expected | None:
        found = self.cell(intake, session)
        if found is None:
            return None
        return Expected(found.band, found.expected, found.boundary, found.episodes, session)


class FixedEffects(BaseModel):
    """score = intercept + intake x (intake - centre) + log_session x log(s)
    + intake_by_log_session x (intake - centre) x log(s)."""

    model_config = ConfigDict(frozen=True)

    intercept: float
    intake: float
    log_session: float
    intake_by_log_session: float


class RandomEffects(BaseModel):
    """G: the covariance of an episode's own intercept and log(session) slope around the fixed effects."""

    model_config = ConfigDict(frozen=True)

    intercept_variance: float = Field(ge=0)
    covariance: float
    log_session_variance: float = Field(ge=0)


class MixedModelFit(InstrumentFit):
    """The mixed-model expected trajectory of one instrument for one tenant: the model's parameters only."""

    method: str = MIXED_MODEL  # what read_fit tells the two kinds apart by
    episodes: int = Field(description="episodes with a baseline and at least one later score in the sessions fitted")
    observations: int = Field(description="scores after intake the model was fitted on")
    first_session: int = Field(ge=2)
    last_session: int = Field(description="the last session fitted: the latest seen, at most max_session")
    intake_centre: float = Field(description="the mean intake of the episodes fitted; intake enters centred on it")
    fixed: FixedEffects
    random: RandomEffects
    residual_variance: float = Field(gt=0)

    def at(self, intake: float, session: int) -> Expected | None:
        """Before the first session fitted (the intake itself) nothing; after the last, the last session's
        curve: a log curve is flat there, and the model has no data beyond it to say more."""
        if session < self.first_session:
            return None
        read = min(session, self.last_session)
        expected, sd = self.predict(intake, read)
        z = NormalDist().inv_cdf(self.percentile)
        boundary = expected + z * sd if self.better == "lower" else expected - z * sd
        band = self.band_of(intake)
        return Expected(band.label if band else None, round(expected, 2), round(boundary, 2), self.episodes, read)

    def predict(self, intake: float, session: int) -> tuple[float, float]:
        """A new episode's expected score at `session` and the standard deviation of its score there."""
        x, log_s = intake - self.intake_centre, math.log(session)
        f, g = self.fixed, self.random
        expected = f.intercept + f.intake * x + f.log_session * log_s + f.intake_by_log_session * x * log_s
        variance = (g.intercept_variance + 2 * g.covariance * log_s + g.log_session_variance * log_s ** 2
                    + self.residual_variance)
        return expected, math.sqrt(variance)


FittedTrajectory = TrajectoryFit | MixedModelFit


def read_fit(document: Mapping[str, Any]) -> FittedTrajectory:
    """A stored fit of either kind, by its method: a document without the mixed model's is a cell fit."""
    if document.get("method") == MIXED_MODEL:
        return MixedModelFit.model_validate(document)
    return TrajectoryFit.model_validate(document)


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
        expected = trajectory.at(change.baseline_total, context.session)
        if expected is None:
            return Verdict()
        rule = context.rules.expected_trajectory
        name = context.rules.name(score.score.instrument)
        key = AlertKey("not_on_track", score.score.instrument, None)
        total = score.score.total
        mixed = isinstance(trajectory, MixedModelFit)
        intake = (f"an intake of {points(change.baseline_total)}" if mixed or expected.band is None
                  else f"a {expected.band} intake")
        if not trajectory.worse(total, expected.boundary):
            return Verdict(clearings=[Clearing(key, "back_on_track", (
                f"{name} {points(total)} at session {context.session}: within the expected range for "
                f"{intake} (boundary {points(expected.boundary)})"))])
        summary = (f"Off the expected trajectory on {name} at session {context.session}: {points(total)}, worse "
                   f"than {round(trajectory.percentile * 100)}% of this clinic's clients with {intake} "
                   f"(expected {points(expected.expected)})")
        values: dict[str, Any] = {
            "session": context.session, "baseline": change.baseline_total, "intake_band": expected.band,
            "expected": expected.expected, "boundary": expected.boundary, "percentile": trajectory.percentile,
            "episodes_in_cell": expected.episodes, "fitted_at": trajectory.fitted_at.isoformat(),
            "method": trajectory.method, "status": "off trajectory"}
        if mixed:
            values["curve_session"] = expected.session  # below context.session past the sessions fitted
        return Verdict(findings=[Finding(key, rule.severity, evidence(context, rule, score, summary, values),
                                         rule.prompt)])


NO_TRAJECTORIES: Mapping[str, FittedTrajectory] = {}
