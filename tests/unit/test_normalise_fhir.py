"""FHIR R4 as real EHRs send it: every linkId and answer convention lands on the same canonical
submission, and every malformed case gets a rejection naming the exact field (synthetic people only)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rapport.services.ingest.normalise import Rejection, TenantMapping, normalise
from rapport.shared.contracts.submission import Submission
from rapport.shared.instruments import Instrument, Registry, load_registry
from rapport.shared.instruments.model import MissingRule

FIXTURES = Path(__file__).parents[1] / "fixtures" / "fhir"


def _shipped(instrument_id: str) -> Instrument:
    instrument = load_registry().get(instrument_id)
    assert instrument is not None
    return instrument


PHQ9 = _shipped("phq9")
# The fixtures' PHQ-9 answers, items 1..9 (total 5).
ANSWERS = {1: 1.0, 2: 2.0, 3: 0.0, 4: 1.0, 5: 0.0, 6: 1.0, 7: 0.0, 8: 0.0, 9: 0.0}
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # when the message arrived: the fixtures were given that morning
PHI = "Jane Roe"  # planted in free-text fields of some fixtures; no message may repeat it


def synthetic(instrument_id: str, maxima: list[int], *, licence: str = "free",
              aliases: list[list[str]] | None = None) -> Instrument:
    """A small made-up instrument for conventions the shipped definitions do not exercise."""
    sourced = {"source": ["S1"], "confidence": "unverified"}
    return Instrument.model_validate({
        "id": instrument_id, "title": "Synthetic test instrument", "version": "1", "kind": "outcome",
        "better": "lower", "licence": {"status": licence, "note": "synthetic", **sourced},
        "items": [{"number": n + 1, "min": 0, "max": top, "aliases": (aliases or [[]] * len(maxima))[n]}
                  for n, top in enumerate(maxima)],
        "scoring": {"method": "sum", **sourced}, "missing": {"rule": "reject", **sourced},
        "sources": {"S1": {"citation": "made up for tests"}},
    })


MOOD3 = synthetic("mood3", [3, 3, 3], aliases=[["mood-interest"], ["MOOD-LOW"], ["mood-sleep"]])
ALLIANCE3 = synthetic("alliance3", [10, 10, 10], licence="licensed")
REGISTRY = Registry([PHQ9, MOOD3, ALLIANCE3])
MAPPING = TenantMapping(
    questionnaires={
        "https://forms.clinic.example/fhir/Questionnaire/intake-mood": "phq9",
        "https://forms.clinic.example/fhir/Questionnaire/mood3": "mood3",
        "https://forms.clinic.example/fhir/Questionnaire/alliance3": "alliance3",
    },
    link_ids={"phq9": {
        **{name: n + 1 for n, name in enumerate(
            ["little_interest", "feeling_down", "sleep_trouble", "tired", "appetite", "feeling_bad",
             "concentration", "moving_slowly", "self_harm_thoughts"])},
        **{opaque: n + 1 for n, opaque in enumerate(
            ["f7c1e2aa", "0b9d44e1", "9e0c11fa", "3a5be7d0", "c2f90b17", "77ad03e9", "e41b6c58", "5d2f8a31",
             "a90e4c7b"])},
    }},
)


def body(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def document(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(body(name))
    return loaded


def run(payload: bytes | dict[str, Any], *, registry: Registry = REGISTRY, mapping: TenantMapping | None = MAPPING,
        licensed: frozenset[str] = frozenset()) -> list[Submission | Rejection]:
    raw = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    return normalise(raw, tenant="acme", registry=registry, mapping=mapping, licensed=licensed, now=NOW)


def accepted(name: str, **kwargs: Any) -> Submission:
    [result] = run(body(name), **kwargs)
    assert isinstance(result, Submission), result
    return result


def rejected(name: str, **kwargs: Any) -> Rejection:
    [result] = run(body(name), **kwargs)
    assert isinstance(result, Rejection), result
    for problem in result.problems:
        assert PHI not in problem.message and PHI not in (problem.expected or "")
    return result


def codes(rejection: Rejection) -> list[tuple[str, str]]:
    return [(p.code, p.field) for p in rejection.problems]


# --- linkId conventions ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "qr-linkid-loinc",                # "44250-9" with LOINC answer codes
    "qr-linkid-loinc-slash",          # "/44250-9"
    "qr-linkid-nested-groups",        # g1.q1 inside groups, the total inside a group
    "qr-linkid-phq9-dash",            # phq9-1
    "qr-linkid-phq-dot",              # PHQ.1
    "qr-linkid-q",                    # q1
    "qr-linkid-item",                 # item1
    "qr-linkid-bare-number",          # 1
    "qr-linkid-descriptive",          # little_interest, through the tenant's linkId map
    "qr-linkid-opaque",               # f7c1e2aa, through the tenant's linkId map
    "qr-linkid-definition",           # opaque linkIds whose item.definition ends in the LOINC code
])
def test_every_link_id_convention_reads_the_same_phq9(name: str) -> None:
    submission = accepted(name)
    assert submission.instrument == "phq9"
    assert submission.responses == ANSWERS
    assert submission.source_format == "fhir-questionnaire-response"
    assert (submission.tenant, submission.client_id, submission.clinician_id) == ("acme", "client-0007",
                                                                                 "clinician-03")
    assert submission.warnings == []


def test_registry_aliases_name_items_case_insensitively() -> None:
    submission = accepted("qr-linkid-aliases")
    assert (submission.instrument, submission.responses) == ("mood3", {1: 1.0, 2: 2.0, 3: 0.0})


def test_descriptive_link_ids_without_a_tenant_map_are_rejected_item_by_item() -> None:
    rejection = rejected("qr-linkid-descriptive", mapping=None)
    unmapped = [("unmapped_link_id", f"item[{n}].linkId") for n in range(9)]
    assert codes(rejection) == [*unmapped, ("link_ids_read", "item")]
    assert rejection.submission_id == "qr-0009"
    summary = rejection.problems[-1]
    assert summary.message == "phq9: no item read; 9 answered linkIds read as no item; items without an answer: 1-9"
    assert "this tenant's linkId map for phq9" in (summary.expected or "")


def test_an_unmapped_linkid_beside_mapped_ones_says_which_linkids_were_read_as_which_items() -> None:
    rejection = rejected("qr-unmapped-linkid")
    assert codes(rejection) == [("unmapped_link_id", "item[9].linkId"), ("link_ids_read", "item")]
    assert rejection.problems[-1].message.startswith("phq9: '44250-9'→1, '44255-8'→2")
    assert "44250-9 for item 1" in (rejection.problems[0].expected or "")


# --- answer conventions ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "qr-answer-decimal",                  # valueDecimal
    "qr-answer-string",                   # valueString "2"
    "qr-answer-coding-code-digit",        # valueCoding {"code": "2"} without a system
    "qr-answer-coding-display-digit",     # valueCoding {"display": "2"} only
    "qr-answer-item-weight",              # local codes weighed by itemWeight on the coding
    "qr-answer-ordinal-value",            # local codes weighed by ordinalValue on the answer
    "qr-answer-contained-questionnaire",  # "#phq9-local": contained Questionnaire, answerOption weights
])
def test_every_answer_convention_reads_the_same_weights(name: str) -> None:
    submission = accepted(name)
    assert (submission.instrument, submission.responses) == ("phq9", ANSWERS)


SHIPPED = load_registry()
GAD7_LINK_IDS = ["69725-0", "68509-9", "69733-4", "69734-2", "69735-9", "69689-8", "69736-7"]


def test_a_gad7_answering_more_days_than_not_on_item_2_reads_2() -> None:
    # LA18938-3 is item 2's own "2" (PCO IG GAD7_02; LHC-Forms /68509-9, ordinalValue 2): gad7.toml V7.
    submission = accepted("qr-answer-loinc-alternate", registry=SHIPPED)
    assert submission.instrument == "gad7"
    assert submission.responses == {1: 1.0, 2: 2.0, 3: 2.0, 4: 1.0, 5: 0.0, 6: 3.0, 7: 0.0}


def test_a_gad2_answering_more_days_than_not_on_item_2_reads_2() -> None:
    # GAD-2 item 2 is the same LOINC item (68509-9); GAD-2 has no panel code, so the tenant maps its form.
    response = document("qr-answer-loinc-alternate")
    response["item"] = response["item"][:2]
    response["questionnaire"] = "https://forms.clinic.example/fhir/Questionnaire/gad2"
    mapping = TenantMapping(questionnaires={"https://forms.clinic.example/fhir/Questionnaire/gad2": "gad2"})
    [submission] = run(response, registry=SHIPPED, mapping=mapping)
    assert isinstance(submission, Submission)
    assert (submission.instrument, submission.responses) == ("gad2", {1: 1.0, 2: 2.0})


def test_more_days_than_not_on_another_gad7_item_is_not_weighed() -> None:
    # The weight belongs to item 2's answer list, not to the code: on item 1 no source gives it a value.
    response = document("qr-answer-loinc-alternate")
    response["item"][0]["answer"][0]["valueCoding"]["code"] = "LA18938-3"
    [rejection] = run(response, registry=SHIPPED)
    assert isinstance(rejection, Rejection) and rejection.instrument == "gad7"
    assert codes(rejection) == [("unscorable_answer", "item[0].answer[0].valueCoding")]
    assert "gad7 item 1" in rejection.problems[0].message


def test_more_days_than_not_on_a_phq9_item_is_rejected_naming_the_item_the_code_and_the_codes_it_takes() -> None:
    rejection = rejected("qr-answer-loinc-alternate-phq9")
    assert codes(rejection) == [("unscorable_answer", "item[1].answer[0].valueCoding")]
    [problem] = rejection.problems
    assert problem.message == "phq9 item 2: the answer code 'LA18938-3' has no weight"
    assert "phq9 item 2 (LA6568-5, LA6569-3, LA6570-1, LA6571-9)" in (problem.expected or "")
    assert "LA18938-3" not in (problem.expected or "")
    assert rejection.submission_id == "qr-0113" and rejection.instrument == "phq9"


def test_a_declined_phq9_item_is_missing_and_the_missing_item_rule_rejects_it() -> None:
    rejection = rejected("qr-declined-item")
    assert codes(rejection) == [("missing_items", "responses")]
    assert "3" in rejection.problems[0].message


def test_a_declined_item_is_prorated_where_the_instrument_allows_it() -> None:
    lenient = PHQ9.model_copy(update={"missing": MissingRule(rule="prorate", max_missing=1, source=["R67"],
                                                             confidence="unverified")})
    submission = accepted("qr-declined-item", registry=Registry([lenient]))
    assert submission.responses == {**ANSWERS, 3: None}


def test_a_phq9_without_item_9_is_rejected_never_scored_as_no_risk() -> None:
    rejection = rejected("qr-missing-item9")
    assert codes(rejection) == [("missing_items", "responses")]
    assert "missing item(s) 9" in rejection.problems[0].message


def test_a_stated_total_is_never_scored_and_a_wrong_one_is_a_warning() -> None:
    submission = accepted("qr-total-mismatch")
    assert submission.responses == ANSWERS and submission.reported_total is None
    [warning] = submission.warnings
    assert (warning.code, warning.field, warning.expected) == ("total_mismatch", "item[9].answer[0]", "5")


def test_a_stated_total_that_agrees_gives_no_warning_and_one_beside_missing_items_is_not_compared() -> None:
    agreeing = document("qr-total-mismatch")
    agreeing["item"][9]["answer"][0]["valueInteger"] = 5
    [submission] = run(agreeing)
    assert isinstance(submission, Submission) and submission.warnings == []
    lenient = PHQ9.model_copy(update={"missing": MissingRule(rule="prorate", max_missing=1, source=["R67"],
                                                             confidence="unverified")})
    declined = document("qr-total-mismatch")
    del declined["item"][0]["answer"]
    [partial] = run(declined, registry=Registry([lenient]))
    assert isinstance(partial, Submission)
    assert [(w.code, w.field) for w in partial.warnings] == [("stated_total_ignored", "item[9].answer[0]")]


def test_an_unscored_item_that_cannot_be_weighed_is_left_out_with_a_warning() -> None:
    submission = accepted("qr-unscored-item10")
    assert submission.responses == ANSWERS
    assert [(w.code, w.field) for w in submission.warnings] == [("unscored_item_ignored", "item[9].answer[0]")]


def test_an_unscored_item_with_a_number_is_kept_for_the_record() -> None:
    response = document("qr-unscored-item10")
    response["item"][9]["answer"] = [{"valueInteger": 2}]
    [submission] = run(response)
    assert isinstance(submission, Submission) and submission.responses == {**ANSWERS, 10: 2.0}


# --- which instrument ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "qr-questionnaire-sdc-canonical",   # a known canonical, with |version
    "qr-questionnaire-panel-suffix",    # any canonical ending in the LOINC panel code
    "qr-questionnaire-mapped",          # the tenant's questionnaire map, with |version
    "qr-questionnaire-meta-tag",        # no questionnaire; a LOINC panel code in meta.tag
    "qr-answer-contained-questionnaire",  # "#id" -> the contained Questionnaire's code
])
def test_the_instrument_is_found_from_every_questionnaire_convention(name: str) -> None:
    assert accepted(name).instrument == "phq9"


def test_an_unknown_questionnaire_whose_linkids_are_phq9_loinc_codes_is_read_as_phq9_with_a_warning() -> None:
    submission = accepted("qr-questionnaire-unknown")
    assert (submission.instrument, submission.responses) == ("phq9", ANSWERS)
    [warning] = submission.warnings
    assert (warning.code, warning.field) == ("instrument_inferred", "questionnaire")
    assert "phq9" in warning.message and "items 1-9 by LOINC code" in warning.message


def test_an_unknown_questionnaire_whose_linkids_name_no_instrument_is_rejected_naming_the_questionnaire_field() -> None:
    response = document("qr-questionnaire-unknown")
    for n, item in enumerate(response["item"]):
        item["linkId"] = f"sleep-{'abcdefghi'[n]}"
    [rejection] = run(response)
    assert isinstance(rejection, Rejection) and codes(rejection) == [("unknown_instrument", "questionnaire")]
    assert "none of its 9 answered linkIds names an item" in rejection.problems[0].message


def test_an_stu3_questionnaire_reference_is_refused_as_not_r4() -> None:
    rejection = rejected("qr-questionnaire-stu3-reference")
    assert codes(rejection) == [("not_fhir_r4", "questionnaire")]
    assert "canonical" in rejection.problems[0].message


def test_a_licensed_instrument_needs_the_tenants_licence() -> None:
    assert codes(rejected("qr-licensed-instrument")) == [("instrument_not_licensed", "instrument")]
    submission = accepted("qr-licensed-instrument", licensed=frozenset({"alliance3"}))
    assert submission.responses == {1: 5.0, 2: 5.0, 3: 5.0}


def test_a_tenant_map_naming_an_instrument_rapport_lacks_is_reported() -> None:
    mapping = TenantMapping(questionnaires={"https://forms.clinic.example/fhir/Questionnaire/intake-mood": "phq99"})
    assert codes(rejected("qr-questionnaire-mapped", mapping=mapping)) == [("unknown_instrument", "questionnaire")]


# --- header fields ---------------------------------------------------------------------------------

@pytest.mark.parametrize("status", ["in-progress", "stopped", "entered-in-error"])
def test_a_response_that_is_not_final_is_rejected(status: str) -> None:
    response = document("qr-status-in-progress")
    response["status"] = status
    [rejection] = run(response)
    assert isinstance(rejection, Rejection) and codes(rejection) == [("status_not_final", "status")]
    assert rejection.submission_id == "qr-0301" and rejection.source_format == "fhir-questionnaire-response"


def test_an_amended_response_is_marked_as_an_amendment() -> None:
    assert accepted("qr-status-amended").amends is True


@pytest.mark.parametrize(("name", "code"), [
    ("qr-authored-date-only", "date_without_time"),
    ("qr-authored-naive", "missing_timezone"),
])
def test_authored_needs_a_time_and_an_offset(name: str, code: str) -> None:
    assert codes(rejected(name)) == [(code, "authored")]


def test_the_submission_id_falls_back_to_the_identifier() -> None:
    assert accepted("qr-id-from-identifier").submission_id == "resp-88412"


def test_an_id_breaking_the_id_rule_is_named_without_its_value() -> None:
    rejection = rejected("qr-id-invalid")
    assert codes(rejection) == [("invalid_id", "id")]
    assert "qr 2026 001" not in rejection.problems[0].message
    assert rejection.submission_id is None  # an id that breaks the rule is never repeated


def test_ids_with_dots_as_fhir_allows_them_are_kept_as_sent() -> None:
    submission = accepted("qr-id-dotted")
    assert (submission.submission_id, submission.client_id, submission.episode_id) == (
        "qr.2026.0001", "client.0007", "episode.0007.1")
    assert submission.clinician_id == "clinician-03" and submission.responses == ANSWERS


def test_a_clinician_id_must_be_a_subject_token() -> None:
    rejection = rejected("qr-author-dotted-clinician")
    assert codes(rejection) == [("invalid_id", "author.reference")]
    assert "dr.smith" not in rejection.problems[0].message


def test_a_self_completed_response_has_no_clinician() -> None:
    assert accepted("qr-author-patient").clinician_id is None


def test_the_subject_must_be_a_patient() -> None:
    assert codes(rejected("qr-subject-not-patient")) == [("invalid_reference", "subject.reference")]


def test_the_episode_comes_from_based_on_episode_of_care() -> None:
    assert accepted("qr-episode-based-on").episode_id == "episode-0007-1"


def test_the_episode_extension_wins_and_the_encounter_is_never_the_episode() -> None:
    assert accepted("qr-episode-extension").episode_id == "episode-0007-2"
    response = document("qr-episode-extension")
    del response["extension"]
    [submission] = run(response)
    assert isinstance(submission, Submission) and submission.episode_id is None


def test_header_problems_are_reported_together() -> None:
    response = document("qr-linkid-loinc")
    response.update(status="in-progress", authored="2026-03-02", subject={"reference": "Group/g-1"})
    [rejection] = run(response)
    assert isinstance(rejection, Rejection)
    assert codes(rejection) == [("status_not_final", "status"), ("invalid_reference", "subject.reference"),
                                ("date_without_time", "authored")]


# --- malformed FHIR --------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "code", "field"), [
    ("qr-item-not-list", "invalid_fhir", "item"),
    ("qr-answer-wrong-type", "invalid_fhir", "item[0].answer[0].valueInteger"),
    ("qr-answer-unscorable-code", "unscorable_answer", "item[0].answer[0].valueCoding"),
    ("qr-duplicate-item", "duplicate_item", "item[9].linkId"),
    ("dstu2-questionnaire-answers", "not_fhir_r4", "resourceType"),
    ("resource-patient", "unsupported_resource", "resourceType"),
    ("resourcetype-missing", "missing_field", "resourceType"),
])
def test_malformed_fhir_is_rejected_naming_the_field(name: str, code: str, field: str) -> None:
    assert codes(rejected(name)) == [(code, field)]


def test_an_unscorable_answer_names_the_item_and_the_code_but_never_the_display() -> None:
    [problem] = rejected("qr-answer-unscorable-code").problems
    assert "item 1" in problem.message and "'often'" in problem.message and PHI not in problem.message


# --- Bundles ---------------------------------------------------------------------------------------

def test_each_bundle_entry_gets_its_own_answer_and_supporting_entries_none() -> None:
    ok, stopped = run(body("bundle-collection"))  # its third entry, a Patient, supports the others
    assert isinstance(ok, Submission) and ok.submission_id == "qr-0501"
    assert isinstance(stopped, Rejection) and codes(stopped) == [("status_not_final", "entry[1].resource.status")]
    assert stopped.submission_id == "qr-0502"


def test_a_bundle_of_supporting_resources_only_is_rejected() -> None:
    bundle = document("bundle-transaction-urn-references")
    bundle["entry"] = bundle["entry"][:3]
    [rejection] = run(bundle)
    assert isinstance(rejection, Rejection) and codes(rejection) == [("empty_bundle", "entry")]


def test_a_bundled_resource_that_is_neither_a_submission_nor_supporting_is_rejected() -> None:
    bundle = document("bundle-collection")
    bundle["entry"][2]["resource"] = {"resourceType": "Condition", "id": "cond-1"}
    [*_, other] = run(bundle)
    assert isinstance(other, Rejection)
    assert codes(other) == [("unsupported_resource", "entry[2].resource.resourceType")]


def test_a_transaction_bundle_is_read_from_entry_resource() -> None:
    [submission] = run(body("bundle-transaction"))
    assert isinstance(submission, Submission) and submission.submission_id == "qr-0503"


def test_a_total_observation_derived_from_a_bundled_response_is_not_scored_twice() -> None:
    response, observation = run(body("bundle-derived-observation"))
    assert isinstance(response, Submission) and response.responses == ANSWERS
    assert isinstance(observation, Rejection)
    assert codes(observation) == [("derived_from_response", "entry[1].resource.derivedFrom[0]")]


def test_a_bundled_questionnaire_weighs_its_responses_answers() -> None:
    [response] = run(body("bundle-searchset-with-questionnaire"))
    assert isinstance(response, Submission) and response.responses == ANSWERS


URN_PATIENT = "urn:uuid:0b6f4c1e-2d3a-4e5f-8a9b-1c2d3e4f5a60"
URN_PRACTITIONER = "urn:uuid:1c7a5d2f-3e4b-4f60-9bac-2d3e4f5a6b71"
URN_ANONYMOUS_RESPONSE = "urn:uuid:4fad8052-6b7e-4293-aedf-5a6b7c8d9ea4"


def test_urn_uuid_references_in_a_transaction_bundle_resolve_to_the_entries_ids() -> None:
    first, second = run(body("bundle-transaction-urn-references"))  # supporting entries get no answer
    assert isinstance(first, Submission) and isinstance(second, Submission)
    assert (first.submission_id, first.client_id, first.clinician_id, first.episode_id) == (
        "qr-0506", "client-0009", "clinician-04", "episode-0009-1")
    assert first.responses == ANSWERS and first.warnings == []
    assert (second.client_id, second.clinician_id, second.episode_id) == ("client-0009", "clinician-04", None)


def test_a_response_with_no_id_of_its_own_is_known_by_its_urn_uuid_full_url_with_a_warning() -> None:
    second = run(body("bundle-transaction-urn-references"))[1]
    assert isinstance(second, Submission) and second.submission_id == URN_ANONYMOUS_RESPONSE
    assert second.submission_id == run(body("bundle-transaction-urn-references"))[1].submission_id  # stable
    [warning] = second.warnings
    assert (warning.code, warning.field) == ("temporary_submission_id", "id")
    assert "new submission" in warning.message and warning.expected == "id or identifier.value, unique per tenant"
    bundle = document("bundle-transaction-urn-references")
    bundle["entry"][4]["resource"]["identifier"] = {"system": "urn:clinic:forms", "value": "resp-0510"}
    [*_, identified] = run(bundle)
    assert isinstance(identified, Submission)
    assert (identified.submission_id, identified.warnings) == ("resp-0510", [])


def test_a_urn_uuid_naming_an_entry_without_an_id_or_no_entry_is_rejected_precisely() -> None:
    no_id, absent = run(body("bundle-transaction-urn-unresolved"))
    assert isinstance(no_id, Rejection) and no_id.submission_id == "qr-0507"
    assert codes(no_id) == [("unresolved_reference", "entry[1].resource.subject.reference")]
    [problem] = no_id.problems
    assert problem.message == ("subject.reference 'urn:uuid:5abe9163-7c8f-43a4-bfe0-6b7c8d9eafb5' names a 'Patient' "
                               "entry of this Bundle whose resource has no id")
    assert problem.expected == "the fullUrl of an entry of the same Bundle whose resource has an id, or <Type>/<id>"
    assert isinstance(absent, Rejection) and absent.submission_id == "qr-0508"
    assert codes(absent) == [("unresolved_reference", "entry[2].resource.author.reference")]
    assert absent.problems[0].message == ("author.reference 'urn:uuid:6bcfa274-8d90-44b5-80f1-7c8d9eafb0c6' is not "
                                          "the fullUrl of any entry of this Bundle")
    for rejection in (no_id, absent):
        assert all(PHI not in p.message for p in rejection.problems)


def test_a_urn_uuid_outside_a_bundle_cannot_be_resolved() -> None:
    response = document("qr-linkid-loinc")
    response["subject"] = {"reference": URN_PATIENT}
    [rejection] = run(response)
    assert isinstance(rejection, Rejection) and codes(rejection) == [("unresolved_reference", "subject.reference")]
    assert "not sent in a Bundle" in rejection.problems[0].message


def test_a_urn_uuid_subject_must_still_name_a_patient() -> None:
    bundle = document("bundle-transaction-urn-references")
    bundle["entry"][3]["resource"]["subject"] = {"reference": URN_PRACTITIONER}
    first = run(bundle)[0]
    assert isinstance(first, Rejection)
    assert codes(first) == [("invalid_reference", "entry[3].resource.subject.reference")]


def test_a_total_observation_in_a_bundle_resolves_its_urn_uuid_subject_and_performer() -> None:
    bundle = document("bundle-transaction-urn-references")
    observation = document("observation-total")
    observation.update(subject={"reference": URN_PATIENT}, performer=[{"reference": URN_PRACTITIONER}])
    bundle["entry"] = [*bundle["entry"][:2], {"fullUrl": "urn:uuid:9ef2d5a7-b0c3-47e8-b3c4-afb0c1d2e3f9",
                                              "resource": observation}]
    [submission] = run(bundle)
    assert isinstance(submission, Submission)
    assert (submission.client_id, submission.clinician_id) == ("client-0009", "clinician-04")
    assert submission.submission_id == observation_id("client-0009", "obs-0601")


def test_an_empty_bundle_is_one_rejection() -> None:
    assert codes(rejected("bundle-empty")) == [("empty_bundle", "entry")]


# --- total-score Observations ----------------------------------------------------------------------

def test_a_total_score_observation_is_a_total_only_submission() -> None:
    submission = accepted("observation-total")
    assert (submission.instrument, submission.item_level, submission.reported_total) == ("phq9", False, 14.0)
    assert submission.responses == {} and submission.source_format == "fhir-observation"
    assert submission.submission_id == observation_id("client-0007", "obs-0601")
    assert submission.clinician_id == "clinician-03"


def observation_id(client: str, ident: str) -> str:
    return "obs:" + hashlib.sha256(f"{client}\x00{ident}".encode()).hexdigest()[:40]


def test_an_observation_submission_id_never_carries_the_client_id_in_clear() -> None:
    # It is in every log line and event about the submission: the client id must not be read from it.
    submission = accepted("observation-total")
    assert "client-0007" not in submission.submission_id and len(submission.submission_id) == 44
    other = document("observation-total")
    other["subject"] = {"reference": "Patient/client-0008"}
    [second] = run(other)
    assert isinstance(second, Submission)
    assert second.submission_id != submission.submission_id  # one Observation id, two clients: two submissions


def test_a_rejected_observation_is_named_by_the_same_derived_id() -> None:
    observation = document("observation-total")
    observation["status"] = "preliminary"
    [rejection] = run(observation)
    assert isinstance(rejection, Rejection)
    assert rejection.submission_id == observation_id("client-0007", "obs-0601")


def test_an_observation_with_value_integer_and_only_issued_is_read() -> None:
    submission = accepted("observation-value-integer-issued")
    assert (submission.reported_total, submission.administered_at.isoformat()) == (7.0, "2026-03-02T10:15:00+01:00")


def test_a_long_observation_id_is_hashed_like_any_other() -> None:
    submission_id = accepted("observation-long-id").submission_id
    assert submission_id.startswith("obs:") and len(submission_id) == 44
    assert submission_id == accepted("observation-long-id").submission_id  # stable


@pytest.mark.parametrize(("name", "code", "field"), [
    ("observation-out-of-range", "out_of_range", "total"),
    ("observation-preliminary", "status_not_final", "status"),
    ("observation-unknown-code", "unknown_instrument", "code.coding"),
])
def test_bad_total_observations_are_rejected(name: str, code: str, field: str) -> None:
    rejection = rejected(name)
    assert codes(rejection) == [(code, field)]
    assert rejection.source_format == "fhir-observation"


# --- CloudEvents -----------------------------------------------------------------------------------

def test_a_cloudevent_wrapping_fhir_is_unwrapped() -> None:
    assert accepted("cloudevent-fhir").submission_id == "qr-0701"


def test_a_cloudevent_naming_another_tenant_is_rejected() -> None:
    assert codes(rejected("cloudevent-tenant-mismatch")) == [("tenant_mismatch", "tenant")]


# --- hostile input: duplicate keys, bounds, finite numbers, exact steps, bounded rejections, ids ------

def test_a_duplicate_key_inside_an_answer_is_refused_at_its_path() -> None:
    raw = body("qr-answer-decimal").replace(b'{"valueDecimal": 0.0}]}\n  ]',
                                            b'{"valueDecimal": 3, "valueDecimal": 0.0}]}\n  ]')
    assert codes(rejected_raw(raw)) == [("duplicate_key", "item[8].answer[0].valueDecimal")]


def test_a_duplicate_key_in_one_bundle_entry_refuses_the_whole_bundle() -> None:
    # Which entry the key belongs to is itself in doubt once a reader drops one of the two values.
    raw = body("bundle-collection").replace(b'"id": "qr-0501",', b'"id": "qr-0501", "id": "qr-0502",')
    assert codes(rejected_raw(raw)) == [("duplicate_key", "entry[0].resource.id")]


def rejected_raw(raw: bytes) -> Rejection:
    [result] = run(raw)
    assert isinstance(result, Rejection), result
    return result


@pytest.mark.parametrize(("name", "field"), [
    ("qr-answer-decimal", "authored"),
    ("observation-total", "effectiveDateTime"),
    ("observation-value-integer-issued", "issued"),
])
@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+14:00", "1899-12-31T23:59:59Z", "9999-12-31T23:59:59-14:00",
                                  "2026-03-03T12:00:01Z"])
def test_an_administration_time_outside_rapports_bounds_is_out_of_range(name: str, field: str, when: str) -> None:
    resource = document(name)
    resource[field] = when
    [problem] = rejected_raw(json.dumps(resource).encode()).problems
    assert (problem.code, problem.field) == ("out_of_range", field)
    assert problem.expected is not None and "from 1900-01-01T00:00:00Z to 2026-03-03T12:00:00Z" in problem.expected


def test_an_effective_period_start_is_bounded_too() -> None:
    observation = document("observation-total")
    del observation["effectiveDateTime"]
    observation["effectivePeriod"] = {"start": "0001-01-01T00:00:00+14:00"}
    assert codes(rejected_raw(json.dumps(observation).encode())) == [("out_of_range", "effectivePeriod.start")]


def test_an_out_of_range_time_in_a_bundle_entry_names_the_entry() -> None:
    bundle = document("bundle-collection")
    bundle["entry"][0]["resource"]["authored"] = "9999-01-01T00:00:00Z"
    first, *rest = run(bundle)
    assert isinstance(first, Rejection) and codes(first) == [("out_of_range", "entry[0].resource.authored")]
    assert rest and all(("out_of_range", "entry[1].resource.authored") not in codes(r)
                        for r in rest if isinstance(r, Rejection))


@pytest.mark.parametrize(("name", "old", "new", "field"), [
    ("qr-answer-decimal", b'{"valueDecimal": 2.0}', b'{"valueDecimal": 1e309}', "item[1].answer[0].valueDecimal"),
    ("qr-answer-decimal", b'{"valueDecimal": 2.0}', b'{"valueDecimal": -1e309}', "item[1].answer[0].valueDecimal"),
    ("qr-answer-decimal", b'{"valueDecimal": 2.0}', b'{"valueInteger": 1e309}', "item[1].answer[0].valueInteger"),
    ("qr-answer-decimal", b'{"valueDecimal": 2.0}', b'{"valueQuantity": {"value": 1e309}}',
     "item[1].answer[0].valueQuantity.value"),
    ("qr-answer-item-weight", b'"valueDecimal": 2}', b'"valueDecimal": 1e309}',
     "item[1].answer[0].valueCoding.extension"),
    ("observation-total", b'"value": 14,', b'"value": 1e309,', "valueQuantity.value"),
    ("observation-value-integer-issued", b'"valueInteger": 7,', b'"valueInteger": -1e309,', "valueInteger"),
])
def test_a_number_too_large_to_be_finite_is_refused_wherever_it_is_read(name: str, old: bytes, new: bytes,
                                                                        field: str) -> None:
    raw = body(name)
    assert old in raw
    [problem] = rejected_raw(raw.replace(old, new, 1)).problems
    assert problem.field == field and problem.code in ("invalid_fhir", "not_a_number")


def test_an_infinite_answer_option_weight_refuses_the_answer_rather_than_weighing_it_otherwise() -> None:
    raw = body("qr-answer-contained-questionnaire")
    old = (b'"code": "opt1",\n                "extension": [{"url": '
           b'"http://hl7.org/fhir/StructureDefinition/itemWeight", "valueDecimal": 1}]')
    assert old in raw
    rejection = rejected_raw(raw.replace(old, old.replace(b'"valueDecimal": 1}', b'"valueDecimal": 1e309}'), 1))
    assert codes(rejection) == [("not_a_number", "item[0].answer[0].valueCoding")]


def test_fhir_answers_within_the_tolerance_of_a_step_are_kept_as_that_step() -> None:
    raw = body("qr-answer-decimal").replace(b'{"valueDecimal": 2.0}', b'{"valueDecimal": 2.0000000001}') \
        .replace(b'{"valueDecimal": 0.0}]}\n  ]', b'{"valueDecimal": 5e-324}]}\n  ]')
    [submission] = run(raw)
    assert isinstance(submission, Submission) and submission.responses == ANSWERS
    assert repr(submission.responses[2]) == "2.0" and repr(submission.responses[9]) == "0.0"


def test_eighty_thousand_unknown_items_name_fifty_and_count_the_rest() -> None:
    response = document("qr-answer-decimal")
    response["item"] += [{"linkId": f"x-{n}-a", "answer": [{"valueInteger": 1}]} for n in range(80_000)]
    rejection = rejected_raw(json.dumps(response).encode())
    assert len(rejection.problems) == 51
    assert rejection.problems[-1].model_dump() == {
        "field": "body", "code": "more_problems",
        "message": "and 79,950 more problems of the same kinds: unmapped_link_id",
        "expected": "fix the problems named and send it again to see any that remain"}


def test_an_answer_key_too_long_to_be_a_code_is_not_shown() -> None:
    response = document("qr-answer-decimal")
    response["item"][0]["answer"][0] = {"value" + "SYNTHETIC-PHI-MARKER" * 10: 1}
    [problem] = rejected_raw(json.dumps(response).encode()).problems
    assert (problem.code, problem.field) == ("invalid_fhir", "item[0].answer[0]")
    assert "SYNTHETIC-PHI-MARKER" not in problem.message


@pytest.mark.parametrize(("field", "reference"), [
    ("author", "Practitioner/dr.smith"), ("author", "Practitioner/clinician-*"), ("author", "Practitioner/clinician>"),
    ("author", "PractitionerRole/clinician\n03"), ("author", "Practitioner/clinician-03\u0007"),
    ("subject", "Patient/client*0007"), ("subject", "Patient/client>"),
    ("subject", "Patient/client-0007\u0000"), ("subject", "Patient/" + "c" * 100_000),
])
def test_a_reference_id_a_subject_or_a_log_line_could_not_hold_is_refused_and_never_echoed(field: str,
                                                                                          reference: str) -> None:
    response = document("qr-answer-decimal")
    response[field] = {"reference": reference}
    rejection = rejected_raw(json.dumps(response).encode())
    assert codes(rejection) == [("invalid_id", f"{field}.reference")]
    [problem] = rejection.problems
    assert problem.message == f"{field}.reference breaks the id rule"


@pytest.mark.parametrize("ident", ["qr*1", "qr>1", "qr-1\n", "qr\u00001", "q" * 100_000, f"{PHI} " * 20_000])
def test_a_resource_id_breaking_the_id_rule_is_never_repeated(ident: str) -> None:
    response = document("qr-answer-decimal")
    response["id"] = ident
    rejection = rejected_raw(json.dumps(response).encode())
    assert codes(rejection) == [("invalid_id", "id")] and rejection.submission_id is None
    assert rejection.problems[0].message == "id breaks the id rule"


# --- never raises ----------------------------------------------------------------------------------

ALL_FIXTURES = sorted(p.stem for p in FIXTURES.glob("*.json"))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
    | st.sampled_from(["QuestionnaireResponse", "Bundle", "Observation", "44250-9", "#x", "Patient/1", "1"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["resourceType", "item", "answer", "linkId", "valueCoding", "code", "extension", "url",
                         "valueInteger", "reference", "subject", "entry", "resource", "questionnaire", "id"])
        | st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for n, value in enumerate(node):
            found += _paths(value, (*path, n))
    return found


@st.composite
def mutated_fixtures(draw: st.DrawFn) -> bytes:
    tree: Any = document(draw(st.sampled_from(ALL_FIXTURES)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(tree)))
        replacement = draw(json_values)
        if not path:
            tree = replacement
            continue
        parent = tree
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = replacement
    return json.dumps(tree).encode()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()) | mutated_fixtures())
def test_normalise_never_raises_and_always_answers(payload: bytes) -> None:
    results = run(payload)
    assert results and all(isinstance(r, Submission | Rejection) for r in results)
    for result in results:
        if isinstance(result, Rejection):
            assert result.problems


# --- instrument inferred from the items (unknown canonical) -----------------------------------------
# Golden fixtures transcribed from published examples; sources in tests/fixtures/fhir/PUBLISHED.md.

SHIPPED = load_registry()  # every instrument Rapport ships: PHQ-2 competes with PHQ-9, GAD-2 with GAD-7


def published(name: str) -> Submission:
    [result] = run(body(name), registry=SHIPPED, mapping=None)
    assert isinstance(result, Submission), result
    return result


def unlisted(name: str) -> dict[str, Any]:
    """A published response under a canonical Rapport does not know (the IGs' own are catalogued, see
    test_questionnaire_catalogue.py), so that the instrument is read from its items alone."""
    response = document(name)
    response["questionnaire"] = "https://forms.clinic.example/fhir/Questionnaire/unlisted"
    return response


def _total(submission: Submission) -> float:
    instrument = SHIPPED.get(submission.instrument)
    assert instrument is not None
    return sum(v or 0 for n, v in submission.responses.items() if instrument.items[n - 1].scored)


@pytest.mark.parametrize(("name", "instrument", "total", "warnings"), [
    # MII PRO (German Medical Informatics Initiative) PHQ-9, linkIds PHQ.1..PHQ.10; the difficulty answer
    # LA6574-3 carries no weight Rapport knows, so item 10 (unscored) is left out with a warning
    ("published-mii-pro-phq9-response-phq-dot", "phq9", 27, ["instrument_inferred", "unscored_item_ignored"]),
    # (the MII PRO responses under the module's own canonical are catalogued: test_questionnaire_catalogue.py)
    # HL7 Personal Health Record format IG (PHR/PGHD), LOINC item codes as linkIds
    ("published-phr-phq9-response", "phq9", 3, ["instrument_inferred"]),
    ("published-phr-gad7-response", "gad7", 3, ["instrument_inferred"]),
])
def test_published_responses_under_unknown_canonicals_are_recognised_from_their_items(
        name: str, instrument: str, total: float, warnings: list[str]) -> None:
    [submission] = run(unlisted(name), registry=SHIPPED, mapping=None)
    assert isinstance(submission, Submission), submission
    assert submission.instrument == instrument and _total(submission) == total
    assert [w.code for w in submission.warnings] == warnings
    assert all(len(w.message) <= 300 for w in submission.warnings)


def test_the_mii_phq9_answering_nearly_every_day_reaches_the_risk_item() -> None:
    assert published("published-mii-pro-phq9-response-phq-dot").responses[9] == 3.0


def test_the_mii_phq_d_block_letters_without_a_canonical_are_rejected_naming_what_would_work() -> None:
    response = document("published-mii-pro-phq9-response-phq-d")
    response["questionnaire"] = "https://forms.clinic.example/fhir/Questionnaire/phq-d"  # not catalogued
    [rejection] = run(response, registry=SHIPPED, mapping=None)
    assert isinstance(rejection, Rejection)
    assert codes(rejection) == [("unknown_instrument", "questionnaire")]
    assert "forms.clinic.example" in rejection.problems[0].message
    assert "questionnaire map" in (rejection.problems[0].expected or "")


def test_a_phq2_answered_alone_is_a_phq2_not_a_phq9_missing_seven_items() -> None:
    response = unlisted("published-phr-phq9-response")
    response["item"] = response["item"][:2]
    [submission] = run(response, registry=SHIPPED, mapping=None)
    assert isinstance(submission, Submission) and submission.instrument == "phq2"
    assert submission.responses == {1: 0.0, 2: 0.0}


def test_a_gad2_answered_alone_is_a_gad2_and_the_full_gad7_is_a_gad7() -> None:
    response = unlisted("published-phr-gad7-response")
    assert published("published-phr-gad7-response").instrument == "gad7"
    response["item"] = response["item"][:2]
    [submission] = run(response, registry=SHIPPED, mapping=None)
    assert isinstance(submission, Submission) and submission.instrument == "gad2"


def test_a_phq9_without_item_9_under_an_unknown_canonical_is_rejected_naming_both_candidates() -> None:
    response = unlisted("published-phr-phq9-response")
    response["item"] = response["item"][:8]
    [rejection] = run(response, registry=SHIPPED, mapping=None)
    assert isinstance(rejection, Rejection)
    assert codes(rejection) == [("unknown_instrument", "questionnaire"), ("instrument_candidate", "item"),
                                ("instrument_candidate", "item")]
    phq9, phq2 = (p.message for p in rejection.problems[1:])
    assert phq9.startswith("phq9: items 1-8 by LOINC code") and "no answer for items 9" in phq9
    assert phq2.startswith("phq2: items 1, 2 by LOINC code") and "6 answered linkIds not its items" in phq2


def test_anonymous_positions_name_no_instrument_so_a_q1_to_q9_form_is_never_taken_for_a_phq9() -> None:
    response = unlisted("published-phr-phq9-response")
    for n, item in enumerate(response["item"], 1):
        item["linkId"] = f"q{n}"
    [rejection] = run(response, registry=SHIPPED, mapping=None)
    assert isinstance(rejection, Rejection) and codes(rejection) == [("unknown_instrument", "questionnaire")]


def test_a_positional_prefix_naming_another_instrument_is_not_read_as_this_ones_item() -> None:
    response = unlisted("published-phr-phq9-response")
    response["item"][2]["linkId"] = "gad7-3"
    [rejection] = run(response, registry=SHIPPED, mapping=None)
    assert isinstance(rejection, Rejection)
    assert "'gad7-3'" in rejection.problems[1].message


TWIN_A = synthetic("twin_a", [3, 3], aliases=[["mood-first"], ["mood-second"]])
TWIN_B = synthetic("twin_b", [3, 3], aliases=[["mood-first"], ["mood-second"]])


def test_a_response_matching_two_instruments_exactly_is_never_guessed() -> None:
    response = document("qr-linkid-aliases")
    response["questionnaire"] = "https://forms.clinic.example/fhir/Questionnaire/unlisted"
    response["item"] = [{"linkId": "mood-first", "answer": [{"valueInteger": 1}]},
                        {"linkId": "MOOD-SECOND", "answer": [{"valueInteger": 2}]}]
    [rejection] = run(response, registry=Registry([PHQ9, TWIN_A, TWIN_B]), mapping=None)
    assert isinstance(rejection, Rejection)
    assert codes(rejection) == [("ambiguous_instrument", "questionnaire"), ("instrument_candidate", "item"),
                                ("instrument_candidate", "item")]
    assert "twin_a and twin_b" in rejection.problems[0].message
    [accepted_a] = run(response, registry=Registry([PHQ9, TWIN_A]), mapping=None)
    assert isinstance(accepted_a, Submission) and accepted_a.instrument == "twin_a"


# The conventions a PHQ-9 item n (LOINC code c) may be sent under. Named ones identify the instrument;
# anonymous ones (q1, item_01, 1) only place the item once the instrument is known.
NAMED: list[Any] = [
    lambda n, c: {"linkId": c}, lambda n, c: {"linkId": f"/{c}"}, lambda n, c: {"linkId": f"/44249-1/{c}"},
    lambda n, c: {"linkId": f"x{n}f3", "definition": f"http://loinc.org/rdf#{c}"},
    lambda n, c: {"linkId": f"PHQ.{n}"}, lambda n, c: {"linkId": f"phq9-{n}"}, lambda n, c: {"linkId": f"PHQ-9.{n}"},
    lambda n, c: {"linkId": f"phq-phq9-q{n:02d}"}, lambda n, c: {"linkId": f"PHQ9_item_{n}"},
]
ANONYMOUS: list[Any] = [lambda n, c: {"linkId": f"q{n}"}, lambda n, c: {"linkId": f"item_{n:02d}"},
                        lambda n, c: {"linkId": str(n)}]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(answers=st.lists(st.integers(0, 3), min_size=9, max_size=9),
       conventions=st.lists(st.sampled_from(NAMED + ANONYMOUS), min_size=9, max_size=9),
       known=st.booleans())
def test_renaming_linkids_through_any_supported_convention_never_changes_the_score(
        answers: list[int], conventions: list[Any], known: bool) -> None:
    response = document("published-phr-phq9-response")
    response["questionnaire"] = "http://loinc.org/q/44249-1" if known else "https://forms.clinic.example/q/x"
    response["item"] = [{**convention(n, item.loinc), "answer": [{"valueInteger": value}]}
                        for n, (convention, item, value) in enumerate(zip(conventions, PHQ9.items, answers,
                                                                              strict=False), 1)]
    [result] = run(response, registry=SHIPPED, mapping=None)
    if not known and all(c in ANONYMOUS for c in conventions):
        assert isinstance(result, Rejection) and result.problems[0].code == "unknown_instrument"
        return
    assert isinstance(result, Submission), result
    assert result.instrument == "phq9" and _total(result) == sum(answers)
    assert result.responses == {n: float(v) for n, v in enumerate(answers, 1)}


# --- Observation panels (EHR exports) -----------------------------------------------------------------

def test_a_phq9_panel_with_item_members_is_one_item_level_submission_with_its_risk_item() -> None:
    [submission] = run(body("bundle-observation-panel"), registry=SHIPPED, mapping=None)
    assert isinstance(submission, Submission), submission
    assert (submission.instrument, submission.item_level, submission.source_format) == ("phq9", True,
                                                                                     "fhir-observation")
    assert submission.responses == {**ANSWERS, 9: 1.0}  # item 9 answered "Several days": the critical item
    assert (submission.client_id, submission.clinician_id) == ("client-0007", "clinician-03")
    assert [(w.code, w.field) for w in submission.warnings] == [
        ("unscored_item_ignored", "entry[10].resource"), ("total_as_string", "entry[11].resource.valueString")]


def test_the_published_us_core_phq9_panel_with_its_item_observations_scores_as_its_stated_total() -> None:
    """US Core's own PHQ-9 export (PUBLISHED.md): the panel, nine item Observations referenced as
    `Observation/<id>`, the difficulty item and the total as the string "12", each a resource of its own."""
    [submission] = run(body("published-us-core-phq9-panel-members"), registry=SHIPPED, mapping=None)
    assert isinstance(submission, Submission), submission
    assert (submission.instrument, submission.item_level) == ("phq9", True)
    # LOINC 44250-9, 44255-8, 44259-0, 44254-1, 44251-7, 44258-2, 44252-5, 44253-3, 44260-8 are items 1-9
    assert submission.responses == {1: 2.0, 2: 2.0, 3: 2.0, 4: 2.0, 5: 1.0, 6: 1.0, 7: 2.0, 8: 0.0, 9: 0.0}
    assert sum(submission.responses.values()) == 12.0  # and the stated "12" agrees: no total_mismatch below
    assert (submission.client_id, submission.clinician_id) == ("client-0110", "practitioner-1")
    assert [w.code for w in submission.warnings] == ["total_as_string", "unscored_item_ignored"]
    restated = document("published-us-core-phq9-panel-members")
    restated["entry"][10]["resource"]["valueString"] = "13"  # the stated total is compared, so a wrong one shows
    [differs] = run(restated, registry=SHIPPED, mapping=None)
    assert isinstance(differs, Submission) and "total_mismatch" in [w.code for w in differs.warnings]


def test_a_panels_stated_total_is_compared_not_scored() -> None:
    bundle = document("bundle-observation-panel")
    bundle["entry"][11]["resource"]["valueString"] = "9"
    [submission] = run(bundle, registry=SHIPPED, mapping=None)
    assert isinstance(submission, Submission)
    assert ("total_mismatch", "entry[11].resource.value") in [(w.code, w.field) for w in submission.warnings]


def test_a_panel_without_item_9_is_rejected_never_scored_as_no_risk() -> None:
    bundle = document("bundle-observation-panel")
    del bundle["entry"][9]
    bundle["entry"][0]["resource"]["hasMember"] = [m for m in bundle["entry"][0]["resource"]["hasMember"]
                                                   if not m["reference"].endswith("0709")]
    [rejection] = run(bundle, registry=SHIPPED, mapping=None)
    assert isinstance(rejection, Rejection) and rejection.instrument == "phq9"


@pytest.mark.parametrize(("change", "code", "field"), [
    ("missing-member", "unresolved_reference", "entry[0].resource.hasMember[0]"),
    ("other-patient", "subject_mismatch", "entry[1].resource.subject"),
    ("unknown-code", "unmapped_code", "entry[1].resource.code.coding"),
    ("local-code-only", "unscorable_answer", "entry[1].resource.valueCodeableConcept.coding[0]"),
])
def test_a_panel_member_problem_names_the_members_own_entry(change: str, code: str, field: str) -> None:
    bundle = document("bundle-observation-panel")
    first = bundle["entry"][1]["resource"]
    if change == "missing-member":
        bundle["entry"][0]["resource"]["hasMember"][0]["reference"] = "Observation/not-sent"
    elif change == "other-patient":
        first["subject"] = {"reference": "Patient/client-0008"}
    elif change == "unknown-code":
        first["code"]["coding"][0]["code"] = "12345-6"
    else:
        first["valueCodeableConcept"]["coding"] = first["valueCodeableConcept"]["coding"][:1]
    rejection, *orphans = run(bundle, registry=SHIPPED, mapping=None)
    assert isinstance(rejection, Rejection)
    assert (code, field) in codes(rejection)
    # an item Observation no panel names is answered on its own: it is not a total, so it is rejected
    assert len(orphans) == (1 if change == "missing-member" else 0)
    assert all(isinstance(o, Rejection) and codes(o)[0] == ("unknown_instrument", "entry[1].resource.code.coding")
               for o in orphans)


def test_a_panel_sent_alone_says_its_members_cannot_be_found() -> None:
    panel = document("bundle-observation-panel")["entry"][0]["resource"]
    [rejection] = run(panel, registry=SHIPPED, mapping=None)
    assert isinstance(rejection, Rejection)
    assert {c for c, _ in codes(rejection)} == {"unresolved_reference"}
    assert "not sent in a Bundle" in rejection.problems[0].message


def test_published_total_observations_and_a_panel_carrying_its_total_as_value_are_total_only() -> None:
    [us_core] = run(body("published-us-core-phq9-panel-value"), registry=SHIPPED, mapping=None)
    assert isinstance(us_core, Submission) and (us_core.instrument, us_core.reported_total) == ("phq9", 3.0)
    assert [w.code for w in us_core.warnings] == ["panel_value_as_total"] and not us_core.item_level
    [mii] = run(body("published-mii-pro-phq9-observation"), registry=SHIPPED, mapping=None)
    assert isinstance(mii, Submission) and (mii.reported_total, mii.warnings) == (27.0, [])


def test_a_total_observation_given_as_a_numeric_string_is_read_with_a_warning() -> None:
    observation = document("observation-total")
    del observation["valueQuantity"]
    observation["valueString"] = "14"
    [submission] = run(observation)
    assert isinstance(submission, Submission) and submission.reported_total == 14.0
    assert [(w.code, w.field) for w in submission.warnings] == [("total_as_string", "valueString")]
    observation["valueString"] = "fourteen"
    [rejection] = run(observation)
    assert isinstance(rejection, Rejection) and codes(rejection) == [("not_a_number", "valueString")]


# --- positional and ordinal forms -------------------------------------------------------------------------

def test_ordinal_values_on_the_coding_phq9_dash_linkids_and_the_difficulty_item_score_together() -> None:
    response = document("qr-linkid-phq9-dash")
    for n, item in enumerate(response["item"]):
        item["answer"] = [{"valueCoding": {"system": "https://forms.clinic.example/answers", "code": f"opt-{n}",
                                           "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/ordinalValue",
                                                          "valueDecimal": ANSWERS[n + 1]}]}}]
    response["item"].append({"linkId": "phq9-10", "answer": [{"valueCoding": {
        "code": "somewhat", "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/ordinalValue",
                                           "valueDecimal": 1}]}}]})
    for questionnaire in ("http://loinc.org/q/44249-1", "https://forms.clinic.example/fhir/Questionnaire/x"):
        response["questionnaire"] = questionnaire
        [submission] = run(response, registry=SHIPPED)
        assert isinstance(submission, Submission), submission
        assert submission.responses == {**ANSWERS, 10: 1.0} and _total(submission) == 5
