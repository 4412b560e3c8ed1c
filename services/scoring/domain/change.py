"""Change in an episode: reliable change (Jacobson & Truax, or a published fixed value) and the
Jacobson & Truax clinical-significance class. Formulas: ../shared/research/clinical-anchors.md §3.1."""

from __future__ import annotations

from datetime import datetime

from services.scoring.domain.scoring import in_clinical_range
from shared.contracts.score import ChangeFromBaseline, ClinicalChange, ReliableChange
from shared.instruments.model import Instrument


def reliable(instrument: Instrument, before: float, after: float) -> ReliableChange:
    """A published fixed value counts at or beyond it (NHS Talking Therapies: "a decrease of 6 or
    more" on PHQ-9); a Jacobson & Truax value is the 1.96·S_diff bound and must be exceeded."""
    spec = instrument.reliable_change
    if spec is None:
        return "none"
    points = spec.points()
    delta = after - before
    worse = delta if instrument.better == "lower" else -delta
    def beyond(d: float) -> bool:
        return d >= points - 1e-9 if spec.method == "fixed" else d > points

    if beyond(worse):
        return "deteriorated"
    if beyond(-worse):
        return "improved"
    return "none"


def clinical(instrument: Instrument, before: float, after: float, movement: ReliableChange) -> ClinicalChange | None:
    if instrument.caseness is None:
        return None
    if movement == "deteriorated":
        return "deteriorated"
    if movement == "none":
        return "unchanged"
    crossed = bool(in_clinical_range(instrument, before)) and not in_clinical_range(instrument, after)
    return "recovered" if crossed else "improved"


def change(
    instrument: Instrument,
    *,
    baseline_total: float,
    baseline_at: datetime,
    previous_total: float | None,
    current_total: float,
) -> ChangeFromBaseline:
    movement = reliable(instrument, baseline_total, current_total)
    spec = instrument.reliable_change
    return ChangeFromBaseline(
        baseline_total=baseline_total,
        baseline_at=baseline_at,
        previous_total=previous_total,
        change_from_baseline=round(current_total - baseline_total, 2),
        change_from_previous=None if previous_total is None else round(current_total - previous_total, 2),
        reliable_change_value=round(spec.points(), 2) if spec else None,
        reliable=movement,
        clinical=clinical(instrument, baseline_total, current_total, movement),
    )
