"""The catalogue of published Questionnaires and a tenant's own: a response to a Questionnaire Rapport knows is
read with that Questionnaire's linkIds and answer weights, with no tenant configuration for published ones.
Golden fixtures and their sources: tests/fixtures/fhir/PUBLISHED.md; the entries' own sources are in
shared/instruments/questionnaires/."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rapport.services.ingest.normalise import Rejection, TenantMapping, normalise
from rapport.services.ingest.normalise.fhir.catalogue import CATALOGUE, load_entries, published, read_questionnaire
from rapport.services.ingest.normalise.outcome import QuestionnaireMap
from rapport.shared.contracts.submission import Submission
from rapport.shared.instruments import Registry, load_registry

FIXTURES = Path(__file__).parents[1] / "fixtures" / "fhir"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SHIPPED = load_registry()
MII_PHQ9 = "https://www.medizininformatik-initiative.de/fhir/ext/modul-pro/Questionnaire/mii-qst-pro-phq-9"


def document(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_bytes())
    return loaded


def run(payload: dict[str, Any], *, registry: Registry = SHIPPED,
        mapping: TenantMapping | None = None) -> Submission | Rejection:
    [result] = normalise(json.dumps(payload).encode(), tenant="acme", registry=registry, mapping=mapping, now=NOW)
    return result


def scored_total(submission: Submission) -> float:
    instrument = SHIPPED.get(submission.instrument)
    assert instrument is not None
    return sum(v or 0 for n, v in submission.responses.items() if instrument.items[n - 1].scored)


# --- the catalogue as data ------------------------------------------------------------------------------

def test_every_catalogue_entry_names_a_registry_instrument_and_cites_the_file_it_was_read_from() -> None:
    entries = load_entries()
    assert {e.id for e in entries} >= {"mii-pro-phq9", "mii-pro-gad7", "phr-phq9", "phr-gad7"}
    assert len(list(CATALOGUE.glob("*.toml"))) == len(entries)
    for entry in entries:
        assert entry.instrument in SHIPPED
        assert entry.source.url and entry.source.url.startswith("https://github.com/")
        assert "@ " in entry.source.citation  # the commit it was read at


def test_an_entry_whose_linkid_names_no_item_stops_the_load(tmp_path: Path) -> None:
    text = (CATALOGUE / "mii-pro-gad7.toml").read_text().replace('"phq-gad7-q07" = 7', '"phq-gad7-q07" = 8', 1)
    (tmp_path / "broken.toml").write_text(text)
    with pytest.raises(ValueError, match="names item 8"):
        load_entries(tmp_path)


def test_an_entry_weighing_an_answer_outside_the_items_range_stops_the_load(tmp_path: Path) -> None:
    text = (CATALOGUE / "mii-pro-phq9.toml").read_text().replace('"LA6571-9" = 3 }', '"LA6571-9" = 4 }', 1)
    (tmp_path / "broken.toml").write_text(text)
    with pytest.raises(ValueError, match="weighs 4"):
        load_entries(tmp_path)


# --- published responses to catalogued Questionnaires ---------------------------------------------------

@pytest.mark.parametrize(("name", "instrument", "total", "warnings"), [
    # MII PRO PHQ-9 of the 2026.5.0 PHQ-D block scheme (phq-phq2a..i): no convention reads the letters, the
    # catalogue entry does; the difficulty answer LA6574-3 has no ordinalValue in the Questionnaire
    ("published-mii-pro-phq9-response-phq-d", "phq9", 27, ["unscored_item_ignored"]),
    # the same canonical, the module's earlier linkIds phq-phq9-q01..q10: read by position as before
    ("published-mii-pro-phq9-response-q01", "phq9", 27, ["unscored_item_ignored"]),
    # MII PRO GAD-7, phq-gad7-q01..q07, stated total 13 (agrees), a PROMIS T-score item (not scored)
    ("published-mii-pro-gad7-response", "gad7", 13, []),
    # HL7 PHR format IG, PHQ-9 and GAD-7 Scored Assessment (linkIds are LOINC item codes, LOINC answer codes)
    ("published-phr-phq9-response", "phq9", 3, []),
    ("published-phr-gad7-response", "gad7", 3, []),
    # HL7 US Core's PHQ-9 example (linkIds /44250-9 ..., ordinalValue 0-3), stated total 12 agrees; its
    # difficulty answer LA6573-5 has no ordinalValue
    ("published-us-core-phq9-response", "phq9", 12, ["unscored_item_ignored"]),
    # HL7 SDC's PHQ-9 example: H1/T1/Q1..Q9 answered with the SDC CodeSystem's own codes (Not-at-all, ...),
    # whose weights only the Questionnaire's contained ValueSet gives; the stated total H1/TS says 13 where the
    # answers sum to 10, so the score is 10 with the warning
    ("published-sdc-phq9-response", "phq9", 10, ["total_mismatch"]),
])
def test_a_published_response_to_a_catalogued_questionnaire_scores_without_tenant_configuration(
        name: str, instrument: str, total: float, warnings: list[str]) -> None:
    submission = run(document(name))
    assert isinstance(submission, Submission), submission
    assert submission.instrument == instrument and scored_total(submission) == total
    assert [w.code for w in submission.warnings] == warnings  # no instrument_inferred: the canonical says it


def test_the_sdc_examples_stated_total_is_compared_not_taken_and_item_9_is_read_for_the_risk_check() -> None:
    submission = run(document("published-sdc-phq9-response"))
    assert isinstance(submission, Submission)
    [mismatch] = submission.warnings
    assert "13" in mismatch.message and "10" in mismatch.message
    assert submission.responses[9] == 1.0


def test_a_tenants_questionnaire_whose_total_is_coded_44261_6_reads_that_linkid_as_the_stated_total() -> None:
    questionnaire = document("questionnaire-tenant-phq9-local-codes")
    questionnaire["item"].append({"linkId": "mood-box", "type": "integer",
                                  "code": [{"system": "http://loinc.org", "code": "44261-6"}]})
    form = read_questionnaire(questionnaire, SHIPPED)
    assert isinstance(form, QuestionnaireMap) and form.total_link_ids == ("mood-box",)
    response = document("qr-tenant-questionnaire-local-codes")
    response["item"].append({"linkId": "mood-box", "answer": [{"valueInteger": 20}]})
    submission = run(response, mapping=TenantMapping.of_forms([form]))
    assert isinstance(submission, Submission)
    assert [w.code for w in submission.warnings] == ["total_mismatch"]  # 20 stated, 12 scored


def test_the_mii_phq_d_response_answering_nearly_every_day_reaches_the_risk_item() -> None:
    submission = run(document("published-mii-pro-phq9-response-phq-d"))
    assert isinstance(submission, Submission) and submission.responses[9] == 3.0


@pytest.mark.parametrize("suffix", ["|2026.5.0", "|1.0.0", "/"])
def test_a_catalogued_canonical_is_recognised_with_any_version_or_a_trailing_slash(suffix: str) -> None:
    response = document("published-mii-pro-phq9-response-phq-d")
    response["questionnaire"] = MII_PHQ9 + suffix
    submission = run(response)
    assert isinstance(submission, Submission) and scored_total(submission) == 27


def test_answer_weights_come_from_the_catalogue_entry_even_where_the_registry_knows_no_answer_code() -> None:
    phq9 = SHIPPED.get("phq9")
    assert phq9 is not None
    bare = phq9.model_copy(update={"coding": phq9.coding.model_copy(update={"answer_codes": {}})})
    response = document("published-mii-pro-phq9-response-phq-d")
    for item in response["item"]:
        for answer in item.get("answer", []):
            answer.get("valueCoding", {}).pop("system", None)  # only a code and a display, as many EHRs send
    submission = run(response, registry=Registry([bare]))
    assert isinstance(submission, Submission) and scored_total(submission) == 27


def test_a_code_the_catalogued_questionnaire_does_not_offer_is_still_refused_naming_the_item() -> None:
    response = document("published-mii-pro-phq9-response-phq-d")
    response["item"][8]["answer"][0]["valueCoding"] = {"system": "urn:local", "code": "often"}
    rejection = run(response)
    assert isinstance(rejection, Rejection)
    assert [(p.code, p.field) for p in rejection.problems] == [
        ("unscorable_answer", "item[8].answer[0].valueCoding")]


def test_a_catalogued_version_is_not_taken_for_another_version_of_the_same_canonical() -> None:
    response = document("published-phr-phq9-response")
    response["questionnaire"] += "|2.0.0"  # the PHR entry is version 1.0.0: the items then say what it is
    submission = run(response)
    assert isinstance(submission, Submission) and [w.code for w in submission.warnings] == ["instrument_inferred"]
    response["questionnaire"] = response["questionnaire"].replace("|2.0.0", "|1.0.0")
    submission = run(response)
    assert isinstance(submission, Submission) and submission.warnings == []


def test_a_tenants_questionnaire_map_for_a_catalogued_canonical_wins_over_the_catalogue() -> None:
    mapping = TenantMapping(questionnaires={MII_PHQ9: "gad7"})
    rejection = run(document("published-mii-pro-phq9-response-phq-d"), mapping=mapping)
    assert isinstance(rejection, Rejection) and rejection.instrument == "gad7"


# --- a tenant's own Questionnaire -----------------------------------------------------------------------

def tenant_form() -> QuestionnaireMap:
    form = read_questionnaire(document("questionnaire-tenant-phq9-local-codes"), SHIPPED)
    assert isinstance(form, QuestionnaireMap), form
    return form


def test_a_tenants_questionnaire_is_read_into_linkids_and_weights_from_its_codes_and_item_weights() -> None:
    form = tenant_form()
    assert form.instrument == "phq9" and form.version == "3"
    assert form.link_ids == {f"mood-{letter}": n for n, letter in enumerate("abcdefghi", 1)}
    assert form.weights["mood-i"] == {"never": 0, "some-days": 1, "most-days": 2, "daily": 3}


def test_a_response_with_only_local_answer_codes_scores_once_the_tenant_imported_its_questionnaire() -> None:
    response = document("qr-tenant-questionnaire-local-codes")
    rejection = run(response)
    assert isinstance(rejection, Rejection)  # without the import: nothing says what mood-a or "daily" is
    submission = run(response, mapping=TenantMapping.of_forms([tenant_form()]))
    assert isinstance(submission, Submission) and submission.instrument == "phq9"
    assert scored_total(submission) == 12 and submission.responses[9] == 2.0


def test_another_version_of_the_tenants_questionnaire_is_not_read_with_this_versions_map() -> None:
    response = document("qr-tenant-questionnaire-local-codes")
    response["questionnaire"] = response["questionnaire"].replace("|3", "|4")
    assert isinstance(run(response, mapping=TenantMapping.of_forms([tenant_form()])), Rejection)


def test_an_imported_questionnaire_with_an_item_rapport_cannot_tie_to_an_item_is_refused_precisely() -> None:
    questionnaire = document("questionnaire-tenant-phq9-local-codes")
    questionnaire["item"][3]["code"] = [{"system": "http://loinc.org", "code": "99999-9"}]
    questionnaire["item"][3]["linkId"] = "sleep-question"
    problems = read_questionnaire(questionnaire, SHIPPED)
    assert isinstance(problems, list)
    assert [(p.code, p.field) for p in problems] == [
        ("unmapped_item", "item[3] (linkId 'sleep-question')"), ("missing_item", "item")]
    assert problems[1].message == "no item of the Questionnaire is phq9 item 3"


def test_an_imported_questionnaire_whose_scored_answer_has_no_weight_is_refused() -> None:
    questionnaire = document("questionnaire-tenant-phq9-local-codes")
    del questionnaire["item"][9]["answerOption"][3]["extension"]
    problems = read_questionnaire(questionnaire, SHIPPED)
    assert isinstance(problems, list)
    assert [(p.code, p.field) for p in problems] == [("unweighed_answer", "item[9] (linkId 'mood-i').answerOption[3]")]


def test_an_imported_questionnaire_naming_no_instrument_is_refused_unless_the_operator_names_one() -> None:
    questionnaire = document("questionnaire-tenant-phq9-local-codes")
    del questionnaire["code"]
    problems = read_questionnaire(questionnaire, SHIPPED)
    assert isinstance(problems, list) and [p.code for p in problems] == ["unknown_instrument"]
    assert isinstance(read_questionnaire(questionnaire, SHIPPED, "phq9"), QuestionnaireMap)


def test_the_published_catalogue_is_loaded_once() -> None:
    assert published() is published()
