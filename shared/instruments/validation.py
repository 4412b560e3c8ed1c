"""Checks a canonical submission's responses against its instrument: every problem, precisely."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal

from rapport.shared.contracts.problems import Problem
from rapport.shared.instruments.model import Instrument, Item


def _expected(item: Item) -> str:
    kind = "an integer" if item.step == 1 else f"a number in steps of {item.step:g}"
    return f"{kind} from {item.min:g} to {item.max:g}"


# How far from a step of the scale (in steps) a value may be and still be that step: floating-point
# noise from the sender's arithmetic (0.1 + 0.2), never a different answer.
STEP_TOLERANCE = 1e-9


def on_step(item: Item, value: float) -> float | None:
    """The step of `item`'s scale that `value` is, as its exact value (5e-324 -> 0, 2.0000000001 -> 2,
    7.3 on a 0.1 scale -> 7.3); None when `value` is off the steps, outside the range, or not finite."""
    if not math.isfinite(value):
        return None
    position = (value - item.min) / item.step
    if not -STEP_TOLERANCE <= position <= (item.max - item.min) / item.step + STEP_TOLERANCE:
        return None
    steps = round(position)
    if abs(position - steps) > STEP_TOLERANCE:
        return None
    # In decimal, so 73 steps of 0.1 are 7.3 and not 7.300000000000001.
    exact = float(Decimal(repr(item.min)) + steps * Decimal(repr(item.step)))
    return exact if item.min <= exact <= item.max else None


def snap_responses(
    instrument: Instrument, responses: Mapping[int, float | None]
) -> tuple[dict[int, float | None], list[Problem]]:
    """The responses with each value as the exact step of its item's scale, and the problems that stop
    them from being scored (see `check_responses`). Keep the responses only when there are no problems."""
    problems: list[Problem] = []
    snapped: dict[int, float | None] = {}
    for number, value in sorted(responses.items()):
        item = instrument.item(number)
        if item is None:
            problems.append(Problem(
                field=f"responses.{number}", code="unknown_item",
                message=f"{instrument.id} has no item {number}",
                expected=f"item numbers 1 to {len(instrument.items)}",
            ))
            continue
        if value is None:
            snapped[number] = None
            continue
        step = on_step(item, value)
        if step is None:
            problems.append(Problem(
                field=f"responses.{number}", code="out_of_range",
                message=f"{instrument.id} item {number} has value {value:.15g}",
                expected=_expected(item),
            ))
            continue
        snapped[number] = step
    missing = [i.number for i in instrument.scored_items if responses.get(i.number) is None]
    allowed = instrument.missing.max_missing if instrument.missing.rule == "prorate" else 0
    risk = [c for c in instrument.critical_items if responses.get(c.item) is None]
    if len(missing) > allowed or risk:
        rule = (f"at most {allowed} missing item(s) can be prorated" if allowed
                else "every scored item is needed")
        if risk and allowed:  # where nothing is prorated, "every scored item is needed" says it already
            rule += "; a critical (risk) item is never prorated: " + ", ".join(
                f"item {c.item} ({c.label})" for c in risk) + " must be answered"
        problems.append(Problem(
            field="responses", code="missing_items",
            message=f"{instrument.id} is missing item(s) {', '.join(map(str, missing))}; {rule}",
            expected=f"answers to items {', '.join(str(i.number) for i in instrument.scored_items)}",
        ))
    return snapped, problems


def check_responses(
    instrument: Instrument, responses: Mapping[int, float | None], *, item_level: bool = True
) -> list[Problem]:
    """Problems that stop this submission from being scored. Empty when it can be scored.

    Unknown items, values out of range or off the scale's steps (within STEP_TOLERANCE of a step is
    that step: `snap_responses` gives the exact values to keep), more missing scored items than
    the instrument's missing-item rule allows, and any unanswered critical (risk) item: a risk item is
    read on its own and never prorated away, so a form without it is refused on every instrument, as a
    PHQ-9 without item 9 always was (clinical-anchors, review of December 2026: CORE-10 item 6).
    Unscored items (PHQ-9's difficulty question) are range-checked when present but never required.
    """
    if not item_level:
        return []
    return snap_responses(instrument, responses)[1]


def check_total(instrument: Instrument, total: float) -> list[Problem]:
    low, high = instrument.total_range
    if low <= total <= high:
        return []
    return [Problem(
        field="total", code="out_of_range",
        message=f"{instrument.id} total {total:g} is outside the instrument's range",
        expected=f"a total from {low:g} to {high:g}",
    )]


def check_scorable(instrument: Instrument, responses: Mapping[int, float | None], *, item_level: bool,
                   reported_total: float | None) -> list[Problem]:
    """Everything that stops a canonical submission from being scored by `instrument`: the checks
    ingest made, made again by whoever receives one from another service."""
    if item_level:
        return check_responses(instrument, responses)
    if reported_total is None:
        return [Problem(field="total", code="missing_field", message="a total-only submission has no total",
                        expected="item responses, or a total")]
    return check_total(instrument, reported_total)


def summary(problems: Sequence[Problem], shown: int = 5) -> str:
    """Problems in one line for a dead letter: codes and fields (which never carry payload text)."""
    listed = "; ".join(f"{p.code} at {p.field}" for p in problems[:shown])
    return listed + (f"; and {len(problems) - shown} more" if len(problems) > shown else "")
