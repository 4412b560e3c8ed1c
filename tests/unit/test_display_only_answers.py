"""Answer codings that carry only a `display` (issue 14 item 4), as some EHR exports send them: read as the
answer option whose display it is, exactly, among the answer options of the response's own catalogued or
imported Questionnaire, for that item; anything else is refused naming the linkId, what came and what would
have been read. Published responses: tests/fixtures/fhir/PUBLISHED.md."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rapport.services.ingest.normalise import Rejection, TenantMapping, normalise
from rapport.services.ingest.normalise.fhir.catalogue import CATALOGUE, load_entries, read_questionnaire
from rapport.services.ingest.normalise.outcome import QuestionnaireMap
from rapport.shared.contracts.submission import Submission
from rapport.shared.instruments import load_registry

FIXTURES = Path(__file__).parents[1] / "fixtures" / "fhir"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
REGISTRY = load_registry()


def document(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_bytes())
    return loaded


def run(payload: dict[str, Any], mapping: TenantMapping | None = None) -> Submission | Rejection:
    [result] = normalise(json.dumps(payload).encode(), tenant="acme", registry=REGISTRY, mapping=mapping, now=NOW)
    return result


def display_only(response: dict[str, Any]) -> dict[str, Any]:
    """The same response with every answer coding's system and code taken away: only the display is left."""
    stripped = copy.deepcopy(response)
    items = list(stripped["item"])
    while items:
        item = items.pop()
        items += item.get("item", [])  # the SDC example nests its questions in a group
        for answer in item.get("answer", []):
            if "valueCoding" in answer:
                answer["valueCoding"] = {"display": answer["valueCoding"]["display"]}
    return stripped


@pytest.mark.parametrize(("fixture", "total"), [
    ("published-phr-phq9-response", 3), ("published-phr-gad7-response", 3),
    ("published-mii-pro-phq9-response-phq-d", 27), ("published-mii-pro-gad7-response", 13),
    ("published-us-core-phq9-response", 12), ("published-sdc-phq9-response", 10)])
def test_a_published_response_sent_with_displays_only_scores_as_with_its_codes(fixture: str, total: int) -> None:
    coded, shown = run(document(fixture)), run(display_only(document(fixture)))
    assert isinstance(coded, Submission) and isinstance(shown, Submission), getattr(shown, "problems", None)
    assert shown.responses == coded.responses
    instrument = REGISTRY.get(shown.instrument)
    assert instrument is not None
    assert sum(v or 0 for n, v in shown.responses.items() if instrument.items[n - 1].scored) == total


def test_a_display_that_differs_only_in_case_is_refused_naming_the_linkid_what_came_and_what_is_read() -> None:
    response = display_only(document("published-phr-phq9-response"))
    response["item"][8]["answer"][0]["valueCoding"]["display"] = "several days"
    rejected = run(response)
    assert isinstance(rejected, Rejection)
    [problem] = rejected.problems
    assert problem.code == "unmatched_display" and problem.field == "item[8].answer[0].valueCoding"
    assert "linkId '44260-8' (phq9 item 9)" in problem.message
    assert "'several days'" in problem.message and "differs from 'Several days' in case or spaces" in problem.message
    assert problem.expected is not None
    assert "'Not at all', 'Several days', 'More than half the days', 'Nearly every day'" in problem.expected


def test_free_text_in_a_display_is_refused_without_repeating_it() -> None:
    response = display_only(document("published-mii-pro-gad7-response"))
    response["item"][0]["answer"][0]["valueCoding"]["display"] = "Told me about her week"
    rejected = run(response)
    assert isinstance(rejected, Rejection)
    [problem] = rejected.problems
    assert problem.code == "unmatched_display"
    assert "a text of 22 characters that is none of them (not shown)" in problem.message
    assert "her week" not in problem.message + (problem.expected or "")


def test_displays_are_read_only_against_the_responses_own_questionnaire() -> None:
    # the PHR response under a canonical Rapport does not list: PHQ-9 inferred from its LOINC linkIds, but no
    # Questionnaire's answer options to read a display against, so a display is never guessed
    response = display_only(document("published-phr-phq9-response"))
    response["questionnaire"] = "https://forms.clinic.example/fhir/Questionnaire/unlisted-phq9"
    rejected = run(response)
    assert isinstance(rejected, Rejection)
    assert {p.code for p in rejected.problems} == {"unmatched_display"}
    assert len(rejected.problems) == 9
    assert all("a display alone is read only against" in (p.expected or "") for p in rejected.problems)


def test_a_numeric_display_is_still_read_as_its_number() -> None:
    response = display_only(document("published-phr-phq9-response"))
    response["item"][0]["answer"][0]["valueCoding"] = {"display": "2"}
    accepted = run(response)
    assert isinstance(accepted, Submission) and accepted.responses[1] == 2


def test_a_tenants_imported_questionnaire_reads_its_own_displays_for_that_tenant_only() -> None:
    questionnaire = document("questionnaire-tenant-phq9-local-codes")
    labels = {"never": "Never", "some-days": "Some days", "most-days": "Most days", "daily": "Every day"}
    for item in questionnaire["item"]:
        for option in item.get("answerOption", []):
            coding = option["valueCoding"]
            coding["display"] = labels.get(coding["code"], coding["code"])
    form = read_questionnaire(questionnaire, REGISTRY)
    assert isinstance(form, QuestionnaireMap)
    assert form.displays["mood-i"]["Every day"] == "daily"
    response = document("qr-tenant-questionnaire-local-codes")
    for item in response["item"]:
        for answer in item.get("answer", []):
            code = answer["valueCoding"]["code"]
            answer["valueCoding"] = {"display": labels[code]}
    mine = run(response, TenantMapping.of_forms([form]))
    assert isinstance(mine, Submission) and mine.responses[9] == 2, getattr(mine, "problems", None)
    assert isinstance(run(response), Rejection)  # another tenant, without the import


def test_an_entry_giving_two_answers_one_display_stops_the_load(tmp_path: Path) -> None:
    text = (CATALOGUE / "phr-gad7.toml").read_text().replace('"LA6569-3" = "Several days"',
                                                            '"LA6569-3" = "Not at all"', 1)
    (tmp_path / "broken.toml").write_text(text)
    with pytest.raises(ValueError, match="share a display"):
        load_entries(tmp_path)
