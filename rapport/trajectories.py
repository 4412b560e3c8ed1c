"""`rapport trajectories fit | show`: expected trajectories from the clinic's own stored scores."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from rapport.services.alerts import repository
from rapport.services.alerts.rules import load_ruleset
from rapport.services.alerts.rules.trajectory import TrajectoryFit
from rapport.services.alerts.trajectories import fit_tenant
from rapport.shared.db.engine import create_engine, session_factory
from rapport.shared.instruments import load_registry


async def fit_stored(url: str, tenants: Sequence[str]) -> list[TrajectoryFit]:
    """Fit each tenant (all tenants with scores when none are named) and store the fits, one transaction each."""
    engine = create_engine(url)
    fitted: list[TrajectoryFit] = []
    try:
        sessions = session_factory(engine)
        async with sessions() as session:
            wanted = list(tenants) or await repository.tenants_with_scores(session)
        registry, rules = load_registry(), load_ruleset()
        for tenant in wanted:
            async with sessions() as session, session.begin():
                fitted += await fit_tenant(session, tenant, registry=registry, rules=rules, now=datetime.now(UTC))
    finally:
        await engine.dispose()
    return fitted


async def stored_fits(url: str, tenants: Sequence[str]) -> list[TrajectoryFit]:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            wanted = list(tenants) or await repository.tenants_with_scores(session)
            found = await repository.trajectory_fits(session, wanted)
    finally:
        await engine.dispose()
    return [fit for tenant in sorted(found) for _, fit in sorted(found[tenant].items())]


def describe(fits: Sequence[TrajectoryFit], *, cells: bool) -> str:
    if not fits:
        return "no expected trajectories: only the checkpoint not_on_track rule runs"
    lines = [f"{'tenant':<16} {'instrument':<10} {'episodes':>8} {'cells':>5}  fitted_at"]
    for f in fits:
        used = "stored" if f.cells else f"none with >= {f.min_episodes} episodes: not stored"
        lines.append(f"{f.tenant:<16} {f.instrument:<10} {f.episodes:>8} {len(f.cells):>5}  "
                     f"{f.fitted_at:%Y-%m-%d %H:%M} UTC ({used})")
        if cells and f.cells:
            side = "upper" if f.better == "lower" else "lower"
            lines.append(f"    {'intake band':<20} {'session':>7} {'episodes':>8} {'expected':>8} "
                         f"{side + ' ' + str(round(f.percentile * 100)) + '%':>9}")
            lines += [f"    {c.band:<20} {c.session:>7} {c.episodes:>8} {c.expected:>8g} {c.boundary:>9g}"
                      for c in f.cells]
    return "\n".join(lines)
