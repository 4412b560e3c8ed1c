"""Totals, subscales, bands, caseness and critical items, exactly as each instrument's definition says.

Plain functions over an `Instrument` and one administration's responses: no I/O, no clock. The
conventions (direction, caseness, band edges, reverse keys) are in `rapport.shared.instruments.model`'s
module docstring; this module only applies them.

`score` assumes the responses passed `rapport.shared.instruments.validation.check_responses` (ingest
guarantees it): every value is on its item's scale and no more items are missing than the
instrument's missing-item rule allows.

The arithmetic (reverse keys, sum or mean, proration, multiplier, half-up rounding to
`instrument.scoring.decimals`: 2 unless the source says otherwise, K10 whole points) is
`rapport.shared.instruments.arithmetic`, which ingest's stated-total check uses too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rapport.shared.contracts.problems import Problem
from rapport.shared.contracts.score import CriticalItemFinding, Scored
from rapport.shared.instruments.arithmetic import combine, round_half_up
from rapport.shared.instruments.model import Instrument


def band_of(instrument: Instrument, total: float) -> str | None:
    """The severity band: the last band whose `min` is at or below the total (see model docstring)."""
    if instrument.bands is None:
        return None
    label = None
    for band in instrument.bands.bands:
        if band.min <= total:
            label = band.label
    last = instrument.bands.bands[-1]
    return None if total > last.max else label


def in_clinical_range(instrument: Instrument, total: float) -> bool | None:
    """Caseness: total >= cutoff where lower is better; total < cutoff where higher is better."""
    if instrument.caseness is None:
        return None
    cutoff = instrument.caseness.value
    return total >= cutoff if instrument.better == "lower" else total < cutoff


def below_concern(instrument: Instrument, total: float) -> bool | None:
    """Alliance: a total below the concern cutoff is a possible alliance problem (SRS < 36)."""
    if instrument.concern_cutoff is None:
        return None
    return total < instrument.concern_cutoff.value


def score(
    instrument: Instrument,
    responses: Mapping[int, float | None],
    *,
    reported_total: float | None = None,
    item_level: bool = True,
) -> Scored:
    """Score one administration.

    Item-level: the total from the scored items (unscored items never count), each subscale by the
    same method, the band, caseness, and every critical item at or above its threshold (on the answer
    as given, before any reverse keying). `risk_checked` is False when a critical item is missing.

    Total-only (`item_level=False`): the reported total as given (rounded), with its band and caseness;
    no subscales and no critical items. `risk_checked` is False when the instrument has critical items,
    since none could be checked; an instrument without critical items has nothing left unchecked.
    """
    if not item_level:
        if reported_total is None:
            raise ValueError(f"a total-only {instrument.id} submission needs reported_total")
        return _total_only(instrument, reported_total)

    scored_items = instrument.scored_items
    combined = combine(instrument, scored_items, responses)
    if combined is None:
        raise ValueError(f"{instrument.id}: no scored item was answered (check_responses should have refused it)")
    total, prorated = combined
    subscales = {
        sub.id: result[0]
        for sub in instrument.subscales
        if (result := combine(instrument, [instrument.items[n - 1] for n in sub.items], responses)) is not None
    }
    findings = [
        CriticalItemFinding(item=crit.item, value=value, threshold=crit.threshold, label=crit.label)
        for crit in instrument.critical_items
        if (value := responses.get(crit.item)) is not None and value >= crit.threshold
    ]
    missing = [item.number for item in scored_items if responses.get(item.number) is None]
    unchecked = [crit.item for crit in instrument.critical_items if responses.get(crit.item) is None]
    warnings: list[Problem] = []
    if prorated:
        warnings.append(Problem(
            field="responses", code="prorated",
            message=(f"{instrument.id} item(s) {_numbers(missing)} missing; the total is prorated from "
                     f"{len(scored_items) - len(missing)} of {len(scored_items)} items"),
        ))
    if unchecked:
        warnings.append(Problem(
            field="responses", code="risk_unchecked",
            message=f"{instrument.id} critical item(s) {_numbers(unchecked)} missing; risk could not be checked",
        ))
    low, high = instrument.total_range
    return Scored(
        instrument=instrument.id, instrument_version=instrument.version, kind=instrument.kind,
        better=instrument.better, total=total, total_min=low, total_max=high, band=band_of(instrument, total),
        caseness=in_clinical_range(instrument, total), subscales=subscales, critical_items=findings,
        item_level=True, risk_checked=not unchecked, missing_items=missing, prorated=prorated,
        warnings=warnings,
    )


def _total_only(instrument: Instrument, reported_total: float) -> Scored:
    total = round_half_up(reported_total, instrument.scoring.decimals)
    warnings = []
    if instrument.critical_items:
        warnings.append(Problem(
            field="responses", code="risk_unchecked",
            message=(f"{instrument.id} arrived as a total only; critical item(s) "
                     f"{_numbers([c.item for c in instrument.critical_items])} could not be checked"),
        ))
    low, high = instrument.total_range
    return Scored(
        instrument=instrument.id, instrument_version=instrument.version, kind=instrument.kind,
        better=instrument.better, total=total, total_min=low, total_max=high, band=band_of(instrument, total),
        caseness=in_clinical_range(instrument, total), item_level=False,
        risk_checked=not instrument.critical_items, warnings=warnings,
    )


def _numbers(numbers: Sequence[int]) -> str:
    return ", ".join(map(str, numbers))
