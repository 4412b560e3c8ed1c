"""Change in an episode: reliable change and the Jacobson & Truax clinical-significance class.

Formulas and classes: /work/shared/research/clinical-anchors.md §3.1 (source R80). The reliable-change
value in points comes from the instrument (`ReliableChangeSpec.points()`): a fixed published value, or
1.96 x sqrt(2) x SD x sqrt(1 - reliability) for Jacobson & Truax.
"""

from __future__ import annotations

from datetime import datetime

from rapport.services.scoring.domain.scoring import in_clinical_range
from rapport.shared.contracts.score import ChangeFromBaseline, ClinicalChange, ReliableChange
from rapport.shared.instruments.arithmetic import round_half_up
from rapport.shared.instruments.model import Instrument

# Totals are rounded to at most 4 decimals, so differences are compared after rounding to 6: the
# comparison then sees 5.000000000000002 (30.1 - 25.1) as the 5 it is, in both directions alike.
_DELTA_DECIMALS = 6


def reliable(instrument: Instrument, before: float, after: float) -> ReliableChange:
    """Reliable improvement, reliable deterioration, or none, from `before` to `after`.

    A *fixed* published value counts at or beyond it: NHS Talking Therapies defines reliable change
    as "a change of 6 or more" on PHQ-9 and 4 or more on GAD-7 (R56). A *Jacobson & Truax* value is
    the bound 1.96 x S_diff and must be exceeded: |RC| > 1.96 (Jacobson & Truax 1991; R80).
    An instrument without a reliable-change value never reports reliable change.
    """
    spec = instrument.reliable_change
    if spec is None:
        return "none"
    points = spec.points()
    delta = round(after - before, _DELTA_DECIMALS)
    worse_by = delta if instrument.better == "lower" else -delta

    def beyond(change: float) -> bool:
        return change >= points if spec.method == "fixed" else change > points

    if beyond(worse_by):
        return "deteriorated"
    if beyond(-worse_by):
        return "improved"
    return "none"


def clinical(instrument: Instrument, before: float, after: float, movement: ReliableChange) -> ClinicalChange | None:
    """Jacobson & Truax class, only where the instrument has both a caseness cutoff and a reliable-change
    value: recovered (reliable improvement that also crossed from the clinical to the non-clinical
    range), improved (reliable improvement without that crossing), unchanged, deteriorated."""
    if instrument.caseness is None or instrument.reliable_change is None:
        return None
    if movement == "deteriorated":
        return "deteriorated"
    if movement == "none":
        return "unchanged"
    crossed = bool(in_clinical_range(instrument, before)) and not in_clinical_range(instrument, after)
    return "recovered" if crossed else "improved"


def jacobson_truax_cutoff(
    *, mean_clinical: float, sd_clinical: float, mean_functional: float, sd_functional: float
) -> float:
    """Clinical-significance cutoff c = (SD_clin x M_func + SD_func x M_clin) / (SD_clin + SD_func): the
    point nearer the functional than the dysfunctional mean, weighted by spread (R80; anchors §3.1).
    For deriving and checking a definition's caseness value from published norms, not used per score."""
    return (sd_clinical * mean_functional + sd_functional * mean_clinical) / (sd_clinical + sd_functional)


def change(
    instrument: Instrument,
    *,
    baseline_total: float,
    baseline_at: datetime,
    previous_total: float | None,
    current_total: float,
) -> ChangeFromBaseline:
    """The current score against the episode's baseline (first score) and the score before it."""
    movement = reliable(instrument, baseline_total, current_total)
    spec = instrument.reliable_change
    return ChangeFromBaseline(
        baseline_total=baseline_total,
        baseline_at=baseline_at,
        previous_total=previous_total,
        change_from_baseline=round_half_up(current_total - baseline_total, 2),
        change_from_previous=None if previous_total is None else round_half_up(current_total - previous_total, 2),
        reliable_change_value=round_half_up(spec.points(), 2) if spec else None,
        reliable=movement,
        clinical=clinical(instrument, baseline_total, current_total, movement),
    )
