"""Expected trajectories from the clinic's own history: `rapport trajectories fit`, and the fits the
alerts service evaluates with (re-read every RAPPORT_TRAJECTORY_REFRESH_SECONDS, so a new fit takes
effect without a restart)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from rapport.services.alerts import repository
from rapport.services.alerts.rules.ruleset import RuleSet
from rapport.services.alerts.rules.trajectory import IntakeBand, TrajectoryFit, fit
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


async def fit_tenant(session: AsyncSession, tenant: str, *, registry: Registry, rules: RuleSet,
                     now: datetime) -> list[TrajectoryFit]:
    """Fit every outcome instrument of the tenant (screeners excepted) from the stored scores, and store
    the fits."""
    series: dict[str, list[list[tuple[int, float]]]] = defaultdict(list)
    episode: _Episode | None = None
    async for client, episode_id, document in repository.tenant_scores(session, tenant):
        if episode is None or episode.key != (client, episode_id):
            if episode is not None:
                episode.emit(series)
            episode = _Episode((client, episode_id))
        episode.add(document)
    if episode is not None:
        episode.emit(series)
    parameters = rules.expected_trajectory.parameters
    fitted = []
    for instrument_id, episodes in sorted(series.items()):
        instrument = registry.get(instrument_id)
        if instrument is None or not instrument.runs_trajectory_rule:  # alliance measures, screeners
            continue
        fitted.append(fit(episodes, tenant=tenant, instrument=instrument_id, better=instrument.better,
                          bands=intake_bands(instrument), percentile=parameters.percentile.value,
                          min_episodes=parameters.min_episodes.value, max_session=parameters.max_session.value,
                          fitted_at=now))
    await repository.save_trajectory_fits(session, tenant, [f for f in fitted if f.cells])
    return fitted


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

    def emit(self, into: dict[str, list[list[tuple[int, float]]]]) -> None:
        for instrument, points in self.series.items():
            into[instrument].append(points)


class StoredFits(Protocol):
    async def trajectory_fits(self, tenants: Iterable[str]) -> dict[str, dict[str, TrajectoryFit]]: ...


@dataclass
class TrajectoryFits:
    """The stored fits per tenant, re-read when older than `refresh`."""

    refresh: timedelta = timedelta(seconds=60)
    _loaded: dict[str, tuple[datetime, dict[str, TrajectoryFit]]] = field(default_factory=dict)

    async def for_tenants(self, record: StoredFits, tenants: Sequence[str],
                          now: datetime) -> dict[str, dict[str, TrajectoryFit]]:
        stale = sorted({t for t in tenants if t not in self._loaded or now - self._loaded[t][0] >= self.refresh})
        if stale:
            for tenant, by_instrument in (await record.trajectory_fits(stale)).items():
                self._loaded[tenant] = (now, by_instrument)
        return {t: self._loaded[t][1] for t in tenants}
