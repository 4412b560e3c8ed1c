"""The instrument registry: every definition loads, cites what it uses, and hangs together.

Facts checked against /work/shared/research/clinical-anchors.md (§2.1 instruments, §2.2 LOINC, §3.2 NHS
Talking Therapies); the source keys in each definition resolve to §7 (R..) or to a verification lookup (V..).
"""

from __future__ import annotations

from itertools import pairwise

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from rapport.cli import app
from rapport.services.scoring.domain import NHS_TALKING_THERAPIES
from rapport.shared.instruments import Instrument, Registry, load_registry
from rapport.shared.instruments.docs import DEFAULT_PAGE, render_markdown
from rapport.shared.instruments.model import Band, Bands
from rapport.shared.instruments.registry import load_definitions

REGISTRY = load_registry()
INSTRUMENTS = list(REGISTRY)
EXPECTED = {"phq9", "phq2", "gad7", "gad2", "core10", "k10", "pcl5", "ors", "srs", "waisr", "sai"}


def shipped(instrument_id: str) -> Instrument:
    instrument = REGISTRY.get(instrument_id)
    assert instrument is not None, instrument_id
    return instrument


def each(test: object) -> object:
    return pytest.mark.parametrize("instrument", INSTRUMENTS, ids=[i.id for i in INSTRUMENTS])(test)


# --- loading and sources ---------------------------------------------------------------------------


def test_every_definition_loads_into_one_registry() -> None:
    definitions = load_definitions()
    assert {i.id for i in definitions} == EXPECTED
    assert [i.id for i in Registry(definitions)] == sorted(EXPECTED)


@each
def test_every_cited_source_is_defined_and_every_defined_source_is_cited(instrument: Instrument) -> None:
    cited = {key for block in instrument.sourced_blocks() for key in block.source} | set(instrument.coding.source)
    assert cited <= set(instrument.sources), f"undefined: {cited - set(instrument.sources)}"
    assert set(instrument.sources) <= cited, f"never cited: {set(instrument.sources) - cited}"


@each
def test_every_source_says_what_it_is(instrument: Instrument) -> None:
    for key, source in instrument.sources.items():
        assert key[0] in "RV" and len(source.citation) > 20, key
        assert source.url is None or source.url.startswith(("http://", "https://")), key


@each
def test_every_unverified_parameter_says_why(instrument: Instrument) -> None:
    for block in instrument.sourced_blocks():
        if block.confidence == "unverified":
            assert block.note, f"{instrument.id}: an unverified {type(block).__name__} block without a note"


@each
def test_every_definition_names_where_its_item_map_comes_from(instrument: Instrument) -> None:
    assert instrument.structure is not None


# --- structure --------------------------------------------------------------------------------------


@each
def test_bands_cover_the_total_range_without_gaps_or_overlap(instrument: Instrument) -> None:
    if instrument.bands is None:
        return
    bands = instrument.bands.bands
    low, high = instrument.total_range
    assert (bands[0].min, bands[-1].max) == (low, high)
    for lower, upper in pairwise(bands):
        # Integer bounds as published: the next band starts one point above the last one ends.
        assert upper.min == lower.max + 1, (lower.label, upper.label)


def test_bands_that_overlap_are_refused() -> None:
    with pytest.raises(ValidationError, match="overlap"):
        Bands(source=["S"], confidence="verified",
              bands=[Band(min=0, max=5, label="low"), Band(min=5, max=9, label="high")])


@each
def test_critical_items_and_subscales_refer_to_scored_items(instrument: Instrument) -> None:
    scored = {i.number for i in instrument.scored_items}
    assert {c.item for c in instrument.critical_items} <= scored
    for sub in instrument.subscales:
        assert set(sub.items) <= scored, sub.id


@each
def test_subscales_split_the_scored_items_once_each(instrument: Instrument) -> None:
    if not instrument.subscales:
        return
    numbers = [n for sub in instrument.subscales for n in sub.items]
    assert sorted(numbers) == [i.number for i in instrument.scored_items]


@each
def test_cutoffs_lie_inside_the_total_range(instrument: Instrument) -> None:
    low, high = instrument.total_range
    for cutoff in (instrument.caseness, instrument.concern_cutoff):
        if cutoff is not None:
            assert low < cutoff.value <= high


@each
def test_alliance_measures_are_higher_is_better_and_only_they_carry_a_concern_cutoff(instrument: Instrument) -> None:
    if instrument.kind == "alliance":
        assert instrument.better == "higher"
    else:
        assert instrument.concern_cutoff is None


@each
def test_item_aliases_are_left_to_the_fhir_mapping(instrument: Instrument) -> None:
    assert all(item.aliases == [] for item in instrument.items)


@each
def test_no_item_wording_is_shipped(instrument: Instrument) -> None:
    for item in instrument.items:
        assert item.topic is None or len(item.topic.split()) <= 4, item.topic
        if instrument.licence.status == "licensed":
            assert item.topic in {None, "individual", "interpersonal", "social", "overall", "relationship",
                                  "goals and topics", "approach or method"}


# --- facts from the research, one instrument at a time -----------------------------------------------


def test_phq9_has_nine_scored_items_and_an_unscored_difficulty_question() -> None:
    phq9 = shipped("phq9")
    assert [i.number for i in phq9.scored_items] == list(range(1, 10))
    assert phq9.total_range == (0, 27) and not phq9.items[9].scored


def test_the_phq2_and_gad7_carry_the_loinc_codes_of_the_research() -> None:
    phq2, gad7 = shipped("phq2"), shipped("gad7")
    assert (phq2.coding.loinc_panel, phq2.coding.loinc_total) == ("55757-9", "55758-7")
    assert (gad7.coding.loinc_panel, gad7.coding.loinc_total) == ("69737-5", "70274-6")
    assert [i.loinc for i in gad7.items] == ["69725-0", "68509-9", "69733-4", "69734-2", "69735-9", "69689-8",
                                             "69736-7"]
    assert REGISTRY.by_questionnaire("http://loinc.org/q/69737-5|2.68") is gad7
    assert REGISTRY.by_total_code("55758-7") is phq2


def test_the_gad2_and_phq2_are_the_first_two_items_of_their_parents() -> None:
    assert [i.loinc for i in shipped("phq2").items] == [i.loinc for i in shipped("phq9").items[:2]]
    assert [i.loinc for i in shipped("gad2").items] == [i.loinc for i in shipped("gad7").items[:2]]


def test_more_days_than_not_weighs_2_on_gad_item_2_only() -> None:
    # PCO IG Questionnaire 69737-5 GAD7_02 and the LHC-Forms GAD-7 /68509-9 (ordinalValue 2): source V7.
    for instrument in (shipped("gad7"), shipped("gad2")):
        assert instrument.items[1].loinc == "68509-9"
        assert instrument.coding.item_answer_codes == {2: {"LA18938-3": 2}}
        assert "V7" in instrument.coding.source and instrument.coding.confidence == "secondary"
        assert instrument.coding.weights_for(2)["LA18938-3"] == 2
        assert "LA18938-3" not in instrument.coding.weights_for(1)
        assert instrument.coding.weights_for(2)["LA6570-1"] == 2  # the common code still counts
    phq9 = shipped("phq9")
    assert phq9.coding.item_answer_codes == {}
    assert all("LA18938-3" not in phq9.coding.weights_for(i.number) for i in phq9.items)


def _with_item_codes(item_answer_codes: dict[int, dict[str, float]]) -> Instrument:
    data = shipped("gad2").model_dump()
    data["coding"]["item_answer_codes"] = item_answer_codes
    return Instrument.model_validate(data)


@pytest.mark.parametrize(("item_answer_codes", "message"), [
    ({3: {"LA18938-3": 2}}, "names item 3, which is not an item"),
    ({2: {"LA18938-3": 4}}, "outside the item's range 0-3"),
    ({2: {}}, "for item 2 is empty"),
])
def test_item_answer_codes_must_name_an_item_and_weigh_within_its_range(
        item_answer_codes: dict[int, dict[str, float]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _with_item_codes(item_answer_codes)


def test_gad7_uses_the_nhs_caseness_and_names_the_developers_cutoff() -> None:
    gad7 = shipped("gad7")
    assert gad7.caseness is not None and gad7.caseness.value == 8
    assert "10" in (gad7.caseness.note or "")


def test_the_nhs_talking_therapies_rule_agrees_with_the_registry() -> None:
    phq9, gad7 = shipped("phq9"), shipped("gad7")
    assert phq9.caseness and gad7.caseness and phq9.reliable_change and gad7.reliable_change
    assert phq9.caseness.value == NHS_TALKING_THERAPIES.phq9_caseness == 10
    assert gad7.caseness.value == NHS_TALKING_THERAPIES.gad7_caseness == 8
    assert phq9.reliable_change.points() == NHS_TALKING_THERAPIES.phq9_reliable_change == 6
    assert gad7.reliable_change.points() == NHS_TALKING_THERAPIES.gad7_reliable_change == 4


def test_core10_is_a_clinical_score_with_one_prorated_item_and_a_risk_item() -> None:
    core10 = shipped("core10")
    assert (core10.scoring.method, core10.scoring.multiplier) == ("mean", 10)
    assert (core10.missing.rule, core10.missing.max_missing) == ("prorate", 1)
    assert [i.number for i in core10.items if i.reverse] == [2, 3]
    assert [(c.item, c.threshold) for c in core10.critical_items] == [(6, 1)]
    assert core10.total_range == (0, 40)


def test_ors_and_srs_are_licensed_visual_analogue_scales() -> None:
    for instrument in (shipped("ors"), shipped("srs")):
        assert instrument.licence.status == "licensed" and instrument.better == "higher"
        assert all((i.min, i.max, i.step) == (0, 10, 0.1) for i in instrument.items)
    ors, srs = shipped("ors"), shipped("srs")
    assert ors.caseness is not None and ors.caseness.value == 25
    assert srs.concern_cutoff is not None and srs.concern_cutoff.value == 36


def test_an_unverified_reliable_change_is_marked_so() -> None:
    ors = shipped("ors")
    assert ors.reliable_change is not None and ors.reliable_change.confidence == "unverified"


def test_instruments_without_a_published_reliable_change_have_none() -> None:
    for instrument_id in ("phq2", "gad2", "k10", "srs", "waisr", "sai"):
        assert shipped(instrument_id).reliable_change is None, instrument_id


def test_change_based_rules_run_only_with_a_reliable_change_value_and_never_on_a_screener() -> None:
    assert [i.id for i in REGISTRY if i.runs_change_rules] == ["core10", "gad7", "ors", "pcl5", "phq9"]
    assert [i.id for i in REGISTRY if i.screener] == ["gad2", "phq2"]
    for screener in ("phq2", "gad2"):
        purpose = shipped(screener).purpose
        assert purpose is not None and purpose.source and purpose.confidence == "verified"


def test_rapport_instruments_says_which_alert_rules_run() -> None:
    from typer.testing import CliRunner

    from rapport.cli import app

    result = CliRunner().invoke(app, ["instruments"])
    assert result.exit_code == 0
    by_id: dict[str, list[str]] = {}
    current = ""
    for line in result.output.splitlines()[1:]:
        if not line.startswith(" "):
            current = line.split()[0]
        by_id.setdefault(current, []).append(line)
    k10 = " ".join(by_id["k10"])
    assert "not run: reliable deterioration, possible sudden loss, the not-on-track checkpoint" in k10
    assert "(no reliable-change value)" in k10
    assert "a screener drives no outcome alerts" in " ".join(by_id["phq2"])
    assert "critical item 9" in " ".join(by_id["phq9"])


def test_licence_notes_name_what_was_verified() -> None:
    k10, waisr = shipped("k10").licence, shipped("waisr").licence
    assert (k10.status, k10.confidence) == ("free", "verified") and "World Health Organization" in (k10.holder or "")
    assert "Kessler" in k10.note and "2003" in k10.note
    assert (waisr.status, waisr.confidence) == ("licensed", "secondary")
    assert "Society for Psychotherapy Research" in (waisr.holder or "")


def test_gad7_caseness_is_the_nhs_talking_therapies_8_and_says_10_is_common_elsewhere() -> None:
    caseness = shipped("gad7").caseness
    assert caseness is not None and caseness.value == 8
    assert "10" in (caseness.note or "") and "NHS Talking Therapies" in (caseness.note or "")


def test_waisr_scores_goal_task_and_bond_from_the_published_item_map() -> None:
    waisr = shipped("waisr")
    assert {s.id: s.items for s in waisr.subscales} == {
        "goal": [4, 6, 8, 11], "task": [1, 2, 10, 12], "bond": [3, 5, 7, 9]}
    assert waisr.total_range == (12, 60)


def test_pcl5_clusters_follow_dsm5() -> None:
    pcl5 = shipped("pcl5")
    assert [len(s.items) for s in pcl5.subscales] == [5, 2, 7, 6]
    assert pcl5.total_range == (0, 80)


# --- the docs page ------------------------------------------------------------------------------------


def test_the_docs_page_shows_an_items_own_answer_codes_beside_the_common_ones() -> None:
    page = render_markdown(REGISTRY)
    [gad7_coding] = [line for line in page.splitlines() if line.startswith("| coding | LOINC panel 69737-5")]
    assert "LA6571-9 = 3; item 2 also LA18938-3 = 2 | ◐ secondary | R74, R74b, V7 |" in gad7_coding
    assert "item 2 also LA18938-3 = 2" not in page.split("## phq9:")[1].split("## ")[0]


def test_rapport_instruments_lists_where_each_item_map_comes_from_and_how_sure() -> None:
    result = CliRunner().invoke(app, ["instruments"])
    assert result.exit_code == 0, result.output
    sections: dict[str, list[str]] = {}
    current = ""
    for line in result.output.splitlines()[1:]:
        if not line.startswith(" "):
            current = line.split()[0]
        sections.setdefault(current, []).append(line)
    for instrument in INSTRUMENTS:
        structure = instrument.structure
        assert structure is not None
        expected = f"{'':<8} {'structure':<16} {structure.confidence:<10} sources {', '.join(structure.source)}"
        assert expected in sections[instrument.id], instrument.id
    assert "         structure        verified   sources R73, V6" in sections["gad7"]


def test_the_docs_page_is_generated_from_the_data_and_up_to_date() -> None:
    page = render_markdown(REGISTRY)
    for instrument in INSTRUMENTS:
        assert f"## {instrument.id}: {instrument.title}" in page
    assert "✖ unverified" in page and "◐ secondary" in page and "✔ verified" in page
    assert DEFAULT_PAGE.read_text(encoding="utf-8") == page, "run: python -m rapport.shared.instruments.docs"
