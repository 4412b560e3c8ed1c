"""Expected trajectories from the clinic's own history: `rapport trajectories fit` (the mixed model of
trajectory_model.py over every episode, stored; with a calibration on held-out episodes when asked), and
the fits the alerts service evaluates with (re-read every RAPPORT_TRAJECTORY_REFRESH_SECONDS, so a new fit
takes effect without a restart)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from rapport.services.alerts import repository
from rapport.services.alerts.rules.ruleset import RuleSet
from rapport.services.alerts.rules.trajectory import FittedTrajectory, IntakeBand, MixedModelFit, Series, fit
from rapport.services.alerts.trajectory_model import (
    SessionCalibration,
    Unfitted,
    calibration,
    fit_mixed,
    held_out,
)
from rapport.shared.instruments import Instrument, Registry


def intake_bands(instrument: Instrument) -> list[IntakeBand]:
    """The instrument's severity bands; else in and out of the clinical range; else one band."""
    low, _high = instrument.total_range
    if instrument.bands is not None:
        return [IntakeBand(label=b.label, min=b.min) for b in instrument.bands.bands]
    if instrument.caseness is not None:
        cutoff = instrument.caseness.value
        if instrument.better == "lower":
            return [IntakeBand(label="non-clinical", min=low), IntakeBand(label="clinical", min=cutoff)]
        return [IntakeBand(label="clinical", min=low), IntakeBand(label="non-clinical", min=cutoff)]
    return [IntakeBand(label="all", min=low)]


@dataclass(frozen=True)
class Calibration:
    """One instrument's fits on the episodes not held out, judged on the held-out ones, both methods."""

    instrument: str
    fitted_episodes: int
    held_out_episodes: int
    mixed_model: list[SessionCalibration] | None  # None: no mixed-model fit on the fitting part
    cells: list[SessionCalibration]


async def fit_tenant(session: AsyncSession, tenant: str, *, registry: Registry, rules: RuleSet,
                     now: datetime) -> list[MixedModelFit | Unfitted]:
    """Fit every outcome instrument of the tenant (screeners excepted) from the stored scores (read
    with `session`; nothing stored: `save_fits`); an instrument with too few episodes or a fit that did
    not converge has none."""
    p = rules.expected_trajectory.parameters
    return [fit_mixed([s for _, s in episodes], tenant=tenant, instrument=instrument.id, better=instrument.better,
                      bands=intake_bands(instrument), percentile=p.percentile.value,
                      min_episodes=p.min_episodes.value, max_session=p.max_session.value, fitted_at=now)
            for instrument, episodes in await _series(session, tenant, registry)]


async def save_fits(session: AsyncSession, tenant: str, fitted: Sequence[MixedModelFit | Unfitted]) -> None:
    await repository.save_trajectory_fits(session, tenant, [f for f in fitted if isinstance(f, MixedModelFit)])


async def calibrate_tenant(session: AsyncSession, tenant: str, *, registry: Registry, rules: RuleSet,
                           now: datetime) -> list[Calibration]:
    """Both methods fitted on four episodes in five (held_out's hash split) and judged on the fifth: the
    share of held-out episodes beyond the boundary at each session. Stores nothing."""
    p = rules.expected_trajectory.parameters
    found = []
    for instrument, episodes in await _series(session, tenant, registry):
        fitting = [s for key, s in episodes if not held_out(key)]
        held = [s for key, s in episodes if held_out(key)]
        bands = intake_bands(instrument)
        mixed = fit_mixed(fitting, tenant=tenant, instrument=instrument.id, better=instrument.better, bands=bands,
                          percentile=p.percentile.value, min_episodes=p.min_episodes.value,
                          max_session=p.max_session.value, fitted_at=now)
        cells = fit(fitting, tenant=tenant, instrument=instrument.id, better=instrument.better, bands=bands,
                    percentile=p.percentile.value, min_episodes=p.min_episodes.value,
                    max_session=p.max_session.value, fitted_at=now)
        found.append(Calibration(instrument.id, len(fitting), len(held),
                                 calibration(mixed, held) if isinstance(mixed, MixedModelFit) else None,
                                 calibration(cells, held)))
    return found


async def _series(session: AsyncSession, tenant: str, registry: Registry
                  ) -> list[tuple[Instrument, list[tuple[str, Series]]]]:
    """Each trajectory instrument's episodes (key 'client/episode', series), in instrument order."""
    series: dict[str, list[tuple[str, Series]]] = defaultdict(list)
    episode: _Episode | None = None
    async for client, episode_id, document in repository.tenant_scores(session, tenant):
        if episode is None or episode.key != (client, episode_id):
            if episode is not None:
                episode.emit(series)
            episode = _Episode((client, episode_id))
        episode.add(document)
    if episode is not None:
        episode.emit(series)
    found = []
    for instrument_id, episodes in sorted(series.items()):
        instrument = registry.get(instrument_id)
        if instrument is not None and instrument.runs_trajectory_rule:  # not alliance measures, screeners
            found.append((instrument, episodes))
    return found


@dataclass
class _Episode:
    """One episode's outcome series, session numbered as the engine numbers them: the submission's
    session number, else the count of distinct administration days so far."""

    key: tuple[str, str]
    sessions: int = 0
    last_day: date | None = None
    series: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))

    def add(self, document: dict[str, Any]) -> None:
        day = datetime.fromisoformat(document["administered_at"]).date()
        if self.last_day is None or day > self.last_day:
            self.sessions, self.last_day = self.sessions + 1, day
        score = document["score"]
        if score.get("kind") != "outcome":
            return
        number = document.get("session_number")
        self.series[score["instrument"]].append((number if number is not None else self.sessions,
                                                 float(score["total"])))

    def emit(self, into: dict[str, list[tuple[str, Series]]]) -> None:
        for instrument, points in self.series.items():
            into[instrument].append((f"{self.key[0]}/{self.key[1]}", points))


class StoredFits(Protocol):
    async def trajectory_fits(self, tenants: Iterable[str]) -> dict[str, dict[str, FittedTrajectory]]: ...


@dataclass
class TrajectoryFits:
    """The stored fits per tenant, re-read when older than `refresh`."""

    refresh: timedelta = timedelta(seconds=60)
    _loaded: dict[str, tuple[datetime, dict[str, FittedTrajectory]]] = field(default_factory=dict)

    async def for_tenants(self, record: StoredFits, tenants: Sequence[str],
                          now: datetime) -> dict[str, dict[str, FittedTrajectory]]:
        stale = sorted({t for t in tenants if t not in self._loaded or now - self._loaded[t][0] >= self.refresh})
        if stale:
            for tenant, by_instrument in (await record.trajectory_fits(stale)).items():
                self._loaded[tenant] = (now, by_instrument)
        return {t: self._loaded[t][1] for t in tenants}
