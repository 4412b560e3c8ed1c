"""Properties that hold for every instrument in the registry, whatever the client answers."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from rapport.services.ingest.normalise.outcome import StatedTotal, stated_total_warning
from rapport.services.scoring.domain import band_of, change, in_clinical_range, nhs_talking_therapies, score
from rapport.shared.instruments import Instrument, load_registry
from rapport.shared.instruments.model import Item
from rapport.shared.instruments.validation import check_responses

INSTRUMENTS = list(load_registry())
WITH_REVERSE_KEYS = [i for i in INSTRUMENTS if any(item.reverse for item in i.items)]
WITH_RELIABLE_CHANGE = [i for i in INSTRUMENTS if i.reliable_change is not None]
INTAKE = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
FLIPPED = {"improved": "deteriorated", "deteriorated": "improved", "none": "none"}

Responses = dict[int, float | None]


def on_scale(item: Item) -> st.SearchStrategy[float]:
    """A value on the item's printed scale: whole points, or tenths on a visual-analogue line."""
    steps = round((item.max - item.min) / item.step)
    return st.integers(0, steps).map(lambda k: round(item.min + k * item.step, 6))


@st.composite
def administrations(draw: st.DrawFn, instruments: list[Instrument] = INSTRUMENTS) -> tuple[Instrument, Responses]:
    """An instrument and a complete, valid set of answers (unscored items sometimes answered)."""
    instrument = draw(st.sampled_from(instruments))
    responses: Responses = {}
    for item in instrument.items:
        if item.scored or draw(st.booleans()):
            responses[item.number] = draw(on_scale(item))
    return instrument, responses


@st.composite
def with_allowed_gaps(draw: st.DrawFn) -> tuple[Instrument, Responses]:
    """As above, with as many scored items left out as the instrument's missing-item rule allows
    (never a critical item: those are never prorated)."""
    instrument, responses = draw(administrations())
    allowed = instrument.missing.max_missing if instrument.missing.rule == "prorate" else 0
    critical = {c.item for c in instrument.critical_items}
    numbers = [i.number for i in instrument.scored_items if i.number not in critical]
    for number in draw(st.lists(st.sampled_from(numbers), max_size=allowed, unique=True)):
        responses[number] = None
    return instrument, responses


def step_of(instrument: Instrument, number: int) -> Item:
    item = instrument.item(number)
    assert item is not None
    return item


@given(with_allowed_gaps())
def test_every_total_lies_within_the_instruments_range(case: tuple[Instrument, Responses]) -> None:
    instrument, responses = case
    assert check_responses(instrument, responses) == []
    scored = score(instrument, responses)
    low, high = instrument.total_range
    assert low <= scored.total <= high
    assert (scored.total_min, scored.total_max) == (low, high)


@given(with_allowed_gaps())
def test_every_total_in_a_banded_instrument_has_a_band(case: tuple[Instrument, Responses]) -> None:
    instrument, responses = case
    scored = score(instrument, responses)
    assert (scored.band is None) == (instrument.bands is None)


@given(with_allowed_gaps(), st.data())
def test_raising_one_answer_moves_the_total_only_the_keyed_way(
    case: tuple[Instrument, Responses], data: st.DataObject
) -> None:
    instrument, responses = case
    answered = [n for n, v in responses.items() if v is not None and n <= len(instrument.items)
                and step_of(instrument, n).scored and v < step_of(instrument, n).max]
    if not answered:
        return
    number = data.draw(st.sampled_from(answered))
    item = step_of(instrument, number)
    value = responses[number]
    assert value is not None
    raised = {**responses, number: round(value + item.step, 6)}
    before, after = score(instrument, responses).total, score(instrument, raised).total
    if item.reverse:
        assert after <= before
    else:
        assert after >= before


@given(administrations(WITH_REVERSE_KEYS) if WITH_REVERSE_KEYS else st.nothing())
def test_a_reverse_keyed_item_scores_as_its_mirror_image(case: tuple[Instrument, Responses]) -> None:
    instrument, responses = case
    plain = instrument.model_copy(update={"items": [i.model_copy(update={"reverse": False}) for i in instrument.items]})
    mirrored: Responses = {
        n: (None if v is None else step_of(instrument, n).min + step_of(instrument, n).max - v)
        if step_of(instrument, n).reverse else v
        for n, v in responses.items()
    }
    assert score(instrument, responses).total == score(plain, mirrored).total


@given(administrations(), st.data())
def test_prorating_happens_only_within_the_missing_item_rule(
    case: tuple[Instrument, Responses], data: st.DataObject
) -> None:
    instrument, responses = case
    numbers = [i.number for i in instrument.scored_items]
    gaps = data.draw(st.lists(st.sampled_from(numbers), max_size=len(numbers) - 1, unique=True))
    for number in gaps:
        responses[number] = None
    allowed = instrument.missing.max_missing if instrument.missing.rule == "prorate" else 0
    problems = check_responses(instrument, responses)
    if len(gaps) > allowed or {c.item for c in instrument.critical_items} & set(gaps):
        assert [p.code for p in problems] == ["missing_items"]  # a risk item is never prorated
        return
    assert problems == []
    scored = score(instrument, responses)
    assert scored.prorated == bool(gaps)
    assert sorted(scored.missing_items) == sorted(gaps)


@given(administrations(), st.data())
def test_unscored_items_never_count(case: tuple[Instrument, Responses], data: st.DataObject) -> None:
    instrument, responses = case
    unscored = [i for i in instrument.items if not i.scored]
    if not unscored:
        return
    changed = {**responses, **{i.number: data.draw(on_scale(i)) for i in unscored}}
    assert score(instrument, changed).total == score(instrument, responses).total


@given(administrations())
def test_a_total_sent_alone_gets_the_same_band_and_caseness(case: tuple[Instrument, Responses]) -> None:
    instrument, responses = case
    item_level = score(instrument, responses)
    total_only = score(instrument, {}, reported_total=item_level.total, item_level=False)
    assert (total_only.total, total_only.band, total_only.caseness) == (
        item_level.total, item_level.band, item_level.caseness)
    assert total_only.risk_checked == (not instrument.critical_items)


@given(st.sampled_from(INSTRUMENTS), st.floats(0, 1))
def test_band_and_caseness_agree_about_the_clinical_range(instrument: Instrument, where: float) -> None:
    low, high = instrument.total_range
    total = round(low + where * (high - low), 2)
    assert band_of(instrument, total) is not None or instrument.bands is None
    case = in_clinical_range(instrument, total)
    assert (case is None) == (instrument.caseness is None)


@st.composite
def two_totals(draw: st.DrawFn) -> tuple[Instrument, float, float]:
    instrument = draw(st.sampled_from(WITH_RELIABLE_CHANGE))
    low, high = instrument.total_range
    tenths = st.integers(round(low * 10), round(high * 10)).map(lambda t: t / 10)
    return instrument, draw(tenths), draw(tenths)


@given(two_totals())
@settings(max_examples=300)
def test_swapping_baseline_and_current_flips_improved_and_deteriorated(case: tuple[Instrument, float, float]) -> None:
    instrument, first, second = case
    forward = change(instrument, baseline_total=first, baseline_at=INTAKE, previous_total=None, current_total=second)
    backward = change(instrument, baseline_total=second, baseline_at=INTAKE, previous_total=None, current_total=first)
    assert backward.reliable == FLIPPED[forward.reliable]
    assert backward.change_from_baseline == -forward.change_from_baseline
    if forward.clinical in ("recovered", "improved"):
        assert backward.clinical == "deteriorated"
    if forward.clinical == "unchanged":
        assert backward.clinical == "unchanged"


@given(two_totals())
def test_a_reliable_change_is_at_least_the_reliable_change_value(case: tuple[Instrument, float, float]) -> None:
    instrument, first, second = case
    movement = change(instrument, baseline_total=first, baseline_at=INTAKE, previous_total=None, current_total=second)
    assert instrument.reliable_change is not None
    if movement.reliable != "none":
        assert abs(second - first) >= instrument.reliable_change.points() - 1e-9
    better = (second < first) if instrument.better == "lower" else (second > first)
    if movement.reliable == "improved":
        assert better


phq9_totals = st.integers(0, 27)
gad7_totals = st.integers(0, 21)


@given(phq9_totals, phq9_totals, gad7_totals, gad7_totals)
def test_talking_therapies_improvement_and_deterioration_are_mirror_images(
    phq9_first: int, phq9_last: int, gad7_first: int, gad7_last: int
) -> None:
    forward = nhs_talking_therapies(phq9_first, phq9_last, gad7_first, gad7_last)
    backward = nhs_talking_therapies(phq9_last, phq9_first, gad7_last, gad7_first)
    assert not (forward.reliable_improvement and forward.reliable_deterioration)
    assert forward.reliable_improvement == backward.reliable_deterioration
    assert forward.reliable_deterioration == backward.reliable_improvement
    if forward.reliably_recovered:
        assert forward.recovered and forward.reliable_improvement


@given(administrations())
@settings(max_examples=300, deadline=None)
def test_the_stated_total_check_agrees_with_scoring_for_every_instrument(case: tuple[Instrument, Responses]) -> None:
    """The items' total ingest compares a stated total with is the total scoring computes: a sender
    stating scoring's total never gets `total_mismatch` (one arithmetic, shared.instruments.arithmetic)."""
    instrument, responses = case
    total = score(instrument, responses).total
    assert stated_total_warning(instrument, responses, StatedTotal("total", total)) is None
    off = stated_total_warning(instrument, responses, StatedTotal("total", total + 1))
    assert off is not None and off.code == "total_mismatch" and off.expected == f"{total:g}"
