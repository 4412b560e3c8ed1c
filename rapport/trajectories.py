"""`rapport trajectories fit [--calibration] | show`: expected trajectories from the clinic's own stored scores."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from rapport.services.alerts import repository
from rapport.services.alerts.rules import load_ruleset
from rapport.services.alerts.rules.ruleset import RuleSet
from rapport.services.alerts.rules.trajectory import FittedTrajectory, MixedModelFit, TrajectoryFit
from rapport.services.alerts.trajectories import Calibration, calibrate_tenant, fit_tenant, save_fits
from rapport.services.alerts.trajectory_model import SessionCalibration, Unfitted
from rapport.shared.db.engine import READ_ONLY, create_engine, session_factory
from rapport.shared.instruments import Registry, load_registry

T = TypeVar("T")
TenantWork = Callable[[AsyncSession, str, Registry, RuleSet], Awaitable[list[T]]]


async def _each_tenant(url: str, tenants: Sequence[str], work: TenantWork[T],
                       keep: Callable[[AsyncSession, str, list[T]], Awaitable[None]] | None = None) -> list[T]:
    """`work` for each tenant named (all tenants with scores when none are) in a transaction that only
    reads (fitting takes seconds, and on SQLite a writer's transaction would hold the services' write
    lock all that time), then `keep` of what it gave in a short one."""
    engine = create_engine(url)
    done: list[T] = []
    try:
        sessions = session_factory(engine)
        async with sessions() as session:
            wanted = list(tenants) or await repository.tenants_with_scores(session)
        registry, rules = load_registry(), load_ruleset()
        for tenant in wanted:
            async with sessions() as session:
                await session.connection(execution_options=READ_ONLY)
                found = await work(session, tenant, registry, rules)
            if keep is not None:
                async with sessions() as session, session.begin():
                    await keep(session, tenant, found)
            done += found
    finally:
        await engine.dispose()
    return done


async def fit_stored(url: str, tenants: Sequence[str]) -> list[MixedModelFit | Unfitted]:
    """Fit each tenant (all tenants with scores when none are named) and store the fits."""
    async def fit(session: AsyncSession, tenant: str, registry: Registry, rules: RuleSet,
                  ) -> list[MixedModelFit | Unfitted]:
        return await fit_tenant(session, tenant, registry=registry, rules=rules, now=datetime.now(UTC))

    return await _each_tenant(url, tenants, fit, save_fits)


async def calibrate_stored(url: str, tenants: Sequence[str]) -> list[tuple[str, Calibration]]:
    """Each tenant's held-out calibration of both methods (nothing stored)."""
    async def calibrate(session: AsyncSession, tenant: str, registry: Registry, rules: RuleSet,
                        ) -> list[tuple[str, Calibration]]:
        return [(tenant, c) for c in await calibrate_tenant(session, tenant, registry=registry, rules=rules,
                                                             now=datetime.now(UTC))]

    return await _each_tenant(url, tenants, calibrate)


async def stored_fits(url: str, tenants: Sequence[str]) -> list[FittedTrajectory]:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            wanted = list(tenants) or await repository.tenants_with_scores(session)
            found = await repository.trajectory_fits(session, wanted)
    finally:
        await engine.dispose()
    return [fit for tenant in sorted(found) for _, fit in sorted(found[tenant].items())]


def describe(fits: Sequence[FittedTrajectory | Unfitted], *, cells: bool) -> str:
    if not fits:
        return "no expected trajectories: only the checkpoint not_on_track rule runs"
    lines = [f"{'tenant':<16} {'instrument':<10} {'episodes':>8}  fit"]
    for f in fits:
        if isinstance(f, Unfitted):
            lines.append(f"{f.tenant:<16} {f.instrument:<10} {f.episodes:>8}  none stored: {f.reason}; "
                         "only the checkpoint rule runs")
        elif isinstance(f, MixedModelFit):
            lines.append(f"{f.tenant:<16} {f.instrument:<10} {f.episodes:>8}  mixed model on {f.observations} scores, "
                         f"sessions {f.first_session}-{f.last_session}, fitted {f.fitted_at:%Y-%m-%d %H:%M} UTC")
            if cells:
                lines += _mixed_model_lines(f)
        else:
            used = "stored" if f.cells else f"none with >= {f.min_episodes} episodes: not stored"
            lines.append(f"{f.tenant:<16} {f.instrument:<10} {f.episodes:>8}  {len(f.cells)} cells (per-cell "
                         f"percentiles, the method before the mixed model), fitted {f.fitted_at:%Y-%m-%d %H:%M} UTC "
                         f"({used})")
            if cells and f.cells:
                lines += _cell_lines(f)
    return "\n".join(lines)


def _cell_lines(f: TrajectoryFit) -> list[str]:
    side = "upper" if f.better == "lower" else "lower"
    lines = [f"    {'intake band':<20} {'session':>7} {'episodes':>8} {'expected':>8} "
             f"{side + ' ' + str(round(f.percentile * 100)) + '%':>9}"]
    return lines + [f"    {c.band:<20} {c.session:>7} {c.episodes:>8} {c.expected:>8g} {c.boundary:>9g}"
                    for c in f.cells]


def _mixed_model_lines(f: MixedModelFit) -> list[str]:
    """The parameters, then expected and boundary at a few sessions for the lowest intake of each band."""
    b, g = f.fixed, f.random
    lines = [f"    score = {b.intercept:.3f} + {b.intake:.3f} (intake - {f.intake_centre:g}) + {b.log_session:.3f} "
             f"log(s) + {b.intake_by_log_session:.3f} (intake - {f.intake_centre:g}) log(s)",
             f"    G = [[{g.intercept_variance:.3f}, {g.covariance:.3f}], [{g.covariance:.3f}, "
             f"{g.log_session_variance:.3f}]], residual variance {f.residual_variance:.3f}"]
    side = ("upper " if f.better == "lower" else "lower ") + f"{round(f.percentile * 100)}%"
    lines.append(f"    {'intake':>8} {'session':>7} {'expected':>8} {side:>9}")
    shown = sorted({s for s in (2, 4, 8, 12, 20) if f.first_session <= s <= f.last_session} | {f.last_session})
    for band in f.bands:
        for session in shown:
            at = f.at(band.min, session)
            if at is not None:
                lines.append(f"    {band.min:>8g} {session:>7} {at.expected:>8g} {at.boundary:>9g}")
    return lines


def describe_calibration(found: Sequence[tuple[str, Calibration]]) -> str:
    """Per session: the share of held-out episodes beyond each method's boundary (nominal 1 - percentile)."""
    if not found:
        return "no trajectory instruments with stored scores: nothing to calibrate"
    lines = []
    for tenant, c in found:
        lines.append(f"{tenant} {c.instrument}: fitted on {c.fitted_episodes} episodes, judged on "
                     f"{c.held_out_episodes} held out (one in five, by a hash of the episode)")
        if c.mixed_model is None:
            lines.append("    no mixed-model fit on the fitting part (too few episodes or no convergence)")
        lines.append(f"    {'session':>7} {'mixed model':>20} {'per-cell percentiles':>22}")
        mixed = {r.session: r for r in c.mixed_model or []}
        cell = {r.session: r for r in c.cells}
        for session in sorted(mixed.keys() | cell.keys()):
            lines.append(f"    {session:>7} {_share(mixed.get(session)):>20} {_share(cell.get(session)):>22}")
    lines.append("  share beyond the boundary among held-out episodes still attending at that session; nominal "
                 "10% at the 90th percentile. Where progress decides who stays, late sessions hold the slower "
                 "clients, so a share above nominal there is partly who stayed, not only the fit.")
    return "\n".join(lines)


def _share(row: SessionCalibration | None) -> str:
    if row is None or row.share is None:
        return "-"
    return f"{row.share:.0%} of {row.judged}"
