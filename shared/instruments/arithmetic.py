"""An instrument's arithmetic, in one place: reverse keys, sum or mean, proration, the multiplier and
rounding. Scoring computes every score with it; ingest uses it to compare a stated total with the
items' total, so the two can never round differently.

Rounding: half-up to `instrument.scoring.decimals` places, from the float's shortest decimal form
(`Decimal(str(x))`), so 13.199999999999999 (four ORS items of 3.3) is 13.2 and floating-point error
can never move a total across a band edge or a cutoff."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal

from rapport.shared.instruments.model import Instrument, Item


def round_half_up(value: float, decimals: int) -> float:
    """`value` rounded half-up to `decimals` places, from its shortest decimal form."""
    return float(Decimal(str(value)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP))


def keyed(item: Item, value: float) -> float:
    """The value as scored: reverse-keyed items are turned round on their own scale (min + max - value)."""
    return item.min + item.max - value if item.reverse else value


def combine(
    instrument: Instrument, items: Sequence[Item], responses: Mapping[int, float | None]
) -> tuple[float, bool] | None:
    """Sum or mean of `items` (reverse-keyed, times the multiplier), prorated over missing ones.

    Sum: (sum of answered) x (number of items) / (number answered), i.e. the mean of the answered items
    times the number of items. Mean: the mean of the answered items. Either way, times the multiplier.
    Returns (score, prorated), or None when no item in `items` was answered.
    """
    answered = [keyed(item, value) for item in items if (value := responses.get(item.number)) is not None]
    if not answered:
        return None
    if instrument.scoring.method == "sum":
        raw = sum(answered) * len(items) / len(answered)
    else:
        raw = sum(answered) / len(answered)
    value = round_half_up(raw * instrument.scoring.multiplier, instrument.scoring.decimals)
    return value, len(answered) < len(items)
