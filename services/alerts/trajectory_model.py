"""Fitting the mixed-model expected trajectory (statsmodels MixedLM), the held-out split and the
calibration of a fit (either kind).

The model, after Finch, Lambert & Schaalje (mixed model of the score on log(session), intake as a
continuous covariate) [R6]:

    score = b0 + b1 (intake - c) + b2 log(s) + b3 (intake - c) log(s) + u0 + u1 log(s) + e

with (u0, u1) an episode's own intercept and slope, covariance G, and e the residual, fitted by REML on
every score after intake of every episode with a baseline, including the episodes that ended early: each
episode contributes the sessions it had, so nobody's leaving removes them from the curve (a likelihood
fit stays unbiased when who leaves depends on the scores already seen). The intake score itself (the
session of the baseline) is not an observation: it is the covariate, and regressing it on itself would
put a zero residual at log(1) = 0 and shrink the residual variance and the slope variance the boundary
is made of. Sessions after max_session are not fitted (Finch et al. estimated sessions 1-20).

Kept outside rules/ because numpy and statsmodels are not typed strictly; the stored parameters and the
prediction arithmetic are plain Python in rules/trajectory.py. statsmodels is imported on the first fit,
so the alerts service, which only reads fits, never loads it."""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from rapport.services.alerts.rules.trajectory import (
    MIXED_MODEL,
    FittedTrajectory,
    FixedEffects,
    IntakeBand,
    MixedModelFit,
    RandomEffects,
    Series,
)

FIRST_SESSION = 2  # the first session after intake; the intake is the covariate, not an observation


@dataclass(frozen=True)
class Unfitted:
    """An instrument with no mixed-model fit: nothing is stored for it, so the checkpoint rule stands alone."""

    tenant: str
    instrument: str
    episodes: int
    reason: str


def fit_mixed(series: Iterable[Series], *, tenant: str, instrument: str, better: Literal["lower", "higher"],
              bands: Sequence[IntakeBand], percentile: float, min_episodes: int, max_session: int,
              fitted_at: datetime) -> MixedModelFit | Unfitted:
    """The mixed model over every episode with a baseline and a later score in sessions 2..max_session."""
    groups: list[int] = []
    intakes: list[float] = []
    sessions: list[int] = []
    totals: list[float] = []
    episode_intakes: list[float] = []
    for points in series:
        later = [(s, t) for s, t in points[1:] if FIRST_SESSION <= s <= max_session]
        if not points or not later:
            continue
        for session, total in later:
            groups.append(len(episode_intakes))
            intakes.append(points[0][1])
            sessions.append(session)
            totals.append(total)
        episode_intakes.append(points[0][1])
    episodes = len(episode_intakes)
    if episodes < min_episodes:
        return Unfitted(tenant, instrument, episodes, f"{episodes} episodes, fewer than min_episodes {min_episodes}")
    if max(episode_intakes) == min(episode_intakes):
        return Unfitted(tenant, instrument, episodes, "every episode has the same intake: intake cannot be a covariate")
    import numpy as np
    import statsmodels.api as sm

    centre = sum(episode_intakes) / episodes
    x = np.asarray(intakes) - centre
    log_s = np.log(np.asarray(sessions, dtype=float))
    ones = np.ones_like(log_s)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence is read from the result, not from warnings
            model = sm.MixedLM(np.asarray(totals), np.column_stack([ones, x, log_s, x * log_s]),
                               groups=np.asarray(groups), exog_re=np.column_stack([ones, log_s]))
            result = model.fit(reml=True, method=["lbfgs", "bfgs", "cg"])  # the first that converges
    except (np.linalg.LinAlgError, ValueError) as exc:
        return Unfitted(tenant, instrument, episodes, f"the mixed model could not be fitted ({exc})")
    g = np.asarray(result.cov_re)
    b = [float(v) for v in np.asarray(result.fe_params)]
    scale = float(result.scale)
    finite = all(math.isfinite(v) for v in [*b, scale, *g.ravel().tolist()])
    if not result.converged or not finite or scale <= 0:
        return Unfitted(tenant, instrument, episodes, "the mixed model did not converge")
    return MixedModelFit(
        tenant=tenant, instrument=instrument, better=better, fitted_at=fitted_at, method=MIXED_MODEL,
        percentile=percentile, min_episodes=min_episodes, max_session=max_session, episodes=episodes,
        observations=len(totals), first_session=min(sessions), last_session=max(sessions),
        intake_centre=round(centre, 6),
        fixed=FixedEffects(intercept=b[0], intake=b[1], log_session=b[2], intake_by_log_session=b[3]),
        random=RandomEffects(intercept_variance=max(0.0, float(g[0, 0])), covariance=float(g[0, 1]),
                             log_session_variance=max(0.0, float(g[1, 1]))),
        residual_variance=scale, bands=sorted(bands, key=lambda band: band.min))


def held_out(episode: str, *, share: int = 5) -> bool:
    """One episode in `share` is held out of the calibration's fit, by a hash of its key: the same split
    on every run and every machine, whatever order the episodes come in."""
    return int.from_bytes(hashlib.sha256(episode.encode()).digest()[:8], "big") % share == 0


@dataclass(frozen=True)
class SessionCalibration:
    session: int
    judged: int  # held-out episodes with a score at this session that the fit could judge
    beyond: int  # of them, beyond the boundary

    @property
    def share(self) -> float | None:
        return self.beyond / self.judged if self.judged else None


def calibration(fit: FittedTrajectory, series: Iterable[Series]) -> list[SessionCalibration]:
    """Per session after intake: how many held-out episodes' scores were beyond the fit's boundary for
    their own intake. Nominal is 1 - percentile (10% at the 90th). Over the episodes still attending:
    where progress decides who stays, those are not a random sample at late sessions, so a share above
    nominal there need not be the model's fault (the evaluation's complete courses tell them apart)."""
    judged: dict[int, list[bool]] = {}
    for points in series:
        if len(points) < 2:
            continue
        intake = points[0][1]
        for session, total in points[1:]:
            if not FIRST_SESSION <= session <= fit.max_session:
                continue
            expected = fit.at(intake, session)
            if expected is not None:
                judged.setdefault(session, []).append(fit.worse(total, expected.boundary))
    return [SessionCalibration(s, len(v), sum(v)) for s, v in sorted(judged.items())]


def calibration_table(rows: Sequence[SessionCalibration]) -> list[dict[str, object]]:
    return [{"session": r.session, "judged": r.judged, "beyond": r.beyond,
             "share": None if r.share is None else round(r.share, 3)} for r in rows]
