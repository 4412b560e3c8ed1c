"""Totals, subscales, bands, caseness and critical items, exactly as each instrument's rule says.

Assumes the responses passed `shared.instruments.validation.check_responses` (ingest guarantees it).
Totals are rounded to 2 decimals so floating-point error never moves a score across a band edge."""

from __future__ import annotations

from collections.abc import Mapping

from shared.contracts.score import CriticalItemFinding, Scored
from shared.instruments.model import Instrument, Item


def _keyed(item: Item, value: float) -> float:
    return item.min + item.max - value if item.reverse else value


def _combine(instrument: Instrument, items: list[Item], responses: Mapping[int, float | None]) -> tuple[float, bool]:
    """Sum or mean of the items (reverse-keyed), prorated for missing items. Returns (score, prorated)."""
    answered = [_keyed(i, v) for i in items if (v := responses.get(i.number)) is not None]
    if not answered:
        return 0.0, False
    mean = sum(answered) / len(answered)
    prorated = len(answered) < len(items)
    raw = mean * len(items) if instrument.scoring.method == "sum" else mean
    return round(raw * instrument.scoring.multiplier, 2), prorated


def band_of(instrument: Instrument, total: float) -> str | None:
    if instrument.bands is None:
        return None
    for band in instrument.bands.bands:
        if band.min <= total <= band.max:
            return band.label
    # Between two integer bands (prorated or decimal totals): the band whose range starts below.
    below = [b for b in instrument.bands.bands if b.min <= total]
    return below[-1].label if below else None


def in_clinical_range(instrument: Instrument, total: float) -> bool | None:
    """Caseness: at or above the cutoff where lower is better; below it where higher is better."""
    if instrument.caseness is None:
        return None
    cutoff = instrument.caseness.value
    return total >= cutoff if instrument.better == "lower" else total < cutoff


def score(
    instrument: Instrument,
    responses: Mapping[int, float | None],
    *,
    reported_total: float | None = None,
    item_level: bool = True,
) -> Scored:
    low, high = instrument.total_range
    if not item_level:
        total = round(reported_total or 0.0, 2)
        return Scored(
            instrument=instrument.id, instrument_version=instrument.version, kind=instrument.kind,
            better=instrument.better, total=total, total_min=low, total_max=high, band=band_of(instrument, total),
            caseness=in_clinical_range(instrument, total), item_level=False,
            risk_checked=not instrument.critical_items,
        )
    scored_items = instrument.scored_items
    total, prorated = _combine(instrument, scored_items, responses)
    subscales = {
        sub.id: _combine(instrument, [instrument.items[n - 1] for n in sub.items], responses)[0]
        for sub in instrument.subscales
    }
    findings = [
        CriticalItemFinding(item=c.item, value=value, threshold=c.threshold, label=c.label)
        for c in instrument.critical_items
        if (value := responses.get(c.item)) is not None and value >= c.threshold
    ]
    missing = [i.number for i in scored_items if responses.get(i.number) is None]
    risk_checked = all(responses.get(c.item) is not None for c in instrument.critical_items)
    return Scored(
        instrument=instrument.id, instrument_version=instrument.version, kind=instrument.kind,
        better=instrument.better, total=total, total_min=low, total_max=high, band=band_of(instrument, total),
        caseness=in_clinical_range(instrument, total), subscales=subscales, critical_items=findings,
        item_level=True, risk_checked=risk_checked, missing_items=missing, prorated=prorated,
    )
