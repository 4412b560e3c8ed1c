"""The native JSON submission: what a clinic without FHIR sends, and the precise answer to each mistake
(synthetic people only)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rapport.services.ingest.normalise import Rejection, normalise
from rapport.shared.contracts.submission import Submission
from rapport.shared.instruments import Instrument, Registry, load_registry

FIXTURES = Path(__file__).parents[1] / "fixtures" / "native"


def _shipped(instrument_id: str) -> Instrument:
    instrument = load_registry().get(instrument_id)
    assert instrument is not None
    return instrument


PHQ9 = _shipped("phq9")
ANSWERS = {1: 1.0, 2: 2.0, 3: 0.0, 4: 1.0, 5: 0.0, 6: 1.0, 7: 0.0, 8: 0.0, 9: 0.0}
PHI = "Jane Roe"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # when the message arrived: the fixtures were given that morning


def licensed_alliance() -> Instrument:
    sourced = {"source": ["S1"], "confidence": "unverified"}
    return Instrument.model_validate({
        "id": "alliance3", "title": "Synthetic licensed instrument", "version": "1", "kind": "alliance",
        "better": "higher", "licence": {"status": "licensed", "note": "synthetic", **sourced},
        "items": [{"number": n, "min": 0, "max": 10} for n in (1, 2, 3)],
        "scoring": {"method": "sum", **sourced}, "missing": {"rule": "reject", **sourced},
        "sources": {"S1": {"citation": "made up for tests"}},
    })


REGISTRY = Registry([PHQ9, licensed_alliance()])


def body(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def run(payload: bytes | dict[str, Any], *, licensed: frozenset[str] = frozenset()) -> list[Submission | Rejection]:
    raw = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    return normalise(raw, tenant="acme", registry=REGISTRY, licensed=licensed, now=NOW)


def accepted(name: str, **kwargs: Any) -> Submission:
    [result] = run(body(name), **kwargs)
    assert isinstance(result, Submission), result
    return result


def rejected(payload: str | bytes) -> Rejection:
    [result] = run(body(payload) if isinstance(payload, str) else payload)
    assert isinstance(result, Rejection), result
    for problem in result.problems:
        assert PHI not in problem.message and PHI not in problem.field and PHI not in (problem.expected or "")
    return result


def codes(rejection: Rejection) -> list[tuple[str, str]]:
    return [(p.code, p.field) for p in rejection.problems]


def test_a_complete_phq9_becomes_the_canonical_submission() -> None:
    submission = accepted("phq9-complete")
    assert submission.model_dump(exclude={"administered_at"}) == {
        "tenant": "acme", "submission_id": "sub-0001", "instrument": "phq9", "client_id": "client-0007",
        "episode_id": "episode-0007-1", "clinician_id": "clinician-03", "session_number": 3,
        "responses": ANSWERS, "reported_total": None, "item_level": True, "amends": False,
        "source_format": "native", "warnings": [],
    }
    assert submission.administered_at.isoformat() == "2026-03-02T10:15:00+01:00"


def test_a_total_only_submission_has_no_responses() -> None:
    submission = accepted("total-only")
    assert (submission.item_level, submission.reported_total, submission.responses) == (False, 14.0, {})


def test_a_total_beside_the_responses_is_never_scored_and_a_wrong_one_is_a_warning() -> None:
    submission = accepted("phq9-with-total")
    assert submission.reported_total is None and submission.item_level
    assert [(w.code, w.field, w.expected) for w in submission.warnings] == [("total_mismatch", "total", "5")]


def test_an_amendment_is_marked() -> None:
    assert accepted("amends").amends is True


def test_a_cloudevent_wrapping_native_json_is_unwrapped() -> None:
    assert accepted("cloudevent-native").submission_id == "sub-0021"


def test_a_licensed_instrument_needs_the_tenants_licence() -> None:
    assert codes(rejected("licensed-instrument")) == [("instrument_not_licensed", "instrument")]
    assert accepted("licensed-instrument", licensed=frozenset({"alliance3"})).responses == {1: 5.0, 2: 6.0, 3: 7.0}


@pytest.mark.parametrize(("name", "code", "field"), [
    ("phq9-declined-item9", "missing_items", "responses"),     # null: asked and declined
    ("phq9-missing-item9", "missing_items", "responses"),      # never a PHQ-9 scored as "no risk" without item 9
    ("unknown-field", "unknown_field", "patient_name"),
    ("naive-datetime", "missing_timezone", "administered_at"),
    ("date-only", "date_without_time", "administered_at"),
    ("invalid-client-id", "invalid_id", "client_id"),
    ("invalid-clinician-id", "invalid_id", "clinician_id"),
    ("unknown-instrument", "unknown_instrument", "instrument"),
    ("tenant-mismatch", "tenant_mismatch", "tenant"),
    ("response-not-a-number", "not_a_number", "responses.1"),
    ("response-boolean", "not_a_number", "responses.9"),
    ("response-key-not-item", "unknown_item", "responses.q1"),
    ("out-of-range", "out_of_range", "responses.2"),
    ("unknown-item-number", "unknown_item", "responses.11"),
    ("no-responses", "missing_field", "responses"),
    ("missing-client-id", "missing_field", "client_id"),
    ("session-negative", "out_of_range", "session"),
])
def test_each_mistake_is_named_by_code_and_field(name: str, code: str, field: str) -> None:
    rejection = rejected(name)
    assert codes(rejection) == [(code, field)]
    assert rejection.source_format == "native"


def test_a_rejection_carries_the_readable_submission_id() -> None:
    assert rejected("out-of-range").submission_id == "sub-0016"


def test_an_unknown_instrument_lists_the_known_ones() -> None:
    [problem] = rejected("unknown-instrument").problems
    assert problem.expected == "one of alliance3, phq9"


def test_a_bad_id_names_the_field_and_the_rule_not_the_value() -> None:
    [problem] = rejected("invalid-clinician-id").problems
    assert "dr.smith" not in problem.message and "[A-Za-z0-9_\\-]" in (problem.expected or "")


def test_dots_are_allowed_in_submission_client_and_episode_ids_but_not_in_the_clinician_id() -> None:
    submission = json.loads(body("phq9-complete"))
    submission.update(submission_id="sub.2026.0001", client_id="client.0007", episode_id="episode.0007.1")
    [accepted_] = run(submission)
    assert isinstance(accepted_, Submission)
    assert (accepted_.submission_id, accepted_.client_id, accepted_.episode_id) == (
        "sub.2026.0001", "client.0007", "episode.0007.1")
    submission["clinician_id"] = "clinician.03"  # would split rapport.<tenant>.notify.<clinician> in two
    rejection = rejected(json.dumps(submission).encode())
    assert codes(rejection) == [("invalid_id", "clinician_id")]
    [problem] = rejection.problems
    assert problem.message == "clinician_id breaks the id rule" and "clinician.03" not in problem.message
    assert problem.expected is not None and "no dots" in problem.expected
    assert rejection.submission_id == "sub.2026.0001" and rejection.instrument == "phq9"


def test_a_missing_item_names_the_item_and_the_rule() -> None:
    [problem] = rejected("phq9-missing-item9").problems
    assert problem.message == "phq9 is missing item(s) 9; every scored item is needed"


def test_a_core10_with_its_risk_item_unanswered_is_refused_and_one_other_gap_is_not() -> None:
    """Client 0007 (synthetic) leaves CORE-10 item 6 (plans to end life) blank: the clinic gets a
    rejection naming item 6, never a prorated score with no alert. Item 4 blank instead is accepted."""
    core10 = _shipped("core10")
    registry = Registry([PHQ9, core10])
    submission = json.loads(body("phq9-complete")) | {"instrument": "core10"}
    submission["responses"] = {str(n): 1 for n in range(1, 11)} | {"6": None}
    [refused] = normalise(json.dumps(submission).encode(), tenant="acme", registry=registry,
                          licensed=frozenset(), now=NOW)
    assert isinstance(refused, Rejection) and codes(refused) == [("missing_items", "responses")]
    assert "item 6 (plans to end life) must be answered" in refused.problems[0].message
    submission["responses"] = {str(n): 1 for n in range(1, 11)} | {"4": None}
    [taken] = normalise(json.dumps(submission).encode(), tenant="acme", registry=registry,
                        licensed=frozenset(), now=NOW)
    assert isinstance(taken, Submission) and taken.responses[4] is None


def test_several_mistakes_are_named_together() -> None:
    submission = json.loads(body("phq9-complete"))
    submission.update(client_id="client 7", administered_at="2026-03-02", extra=1)
    rejection = rejected(json.dumps(submission).encode())
    assert sorted(codes(rejection)) == [("date_without_time", "administered_at"), ("invalid_id", "client_id"),
                                        ("unknown_field", "extra")]


def test_keys_that_are_not_code_like_are_not_echoed_in_the_field_path() -> None:
    submission = json.loads(body("phq9-complete"))
    submission["responses"]["Jane Roe"] = 1
    assert codes(rejected(json.dumps(submission).encode())) == [("unknown_item", "responses.<key not shown>")]


@pytest.mark.parametrize(("raw", "code", "message"), [
    (b'{"submission_id": "x", ', "invalid_json", "line 1 column 24"),
    (b"\xff\xfe\x00{", "invalid_json", "not UTF-8"),
    (b'{"total": NaN}', "invalid_json", "NaN"),
    (b"[" * 50_000, "invalid_json", "nested too deeply"),
    (b'["Jane Roe"]', "not_an_object", "an array"),
    (b"", "invalid_json", "line 1 column 1"),
])
def test_a_body_that_is_not_a_json_object_is_one_rejection_without_an_echo(raw: bytes, code: str,
                                                                             message: str) -> None:
    [problem] = rejected(raw).problems
    assert (problem.code, problem.field) == (code, "body") and message in problem.message


def test_a_subject_naming_no_valid_tenant_is_refused() -> None:
    [result] = normalise(body("phq9-complete"), tenant="Not A Tenant", registry=REGISTRY, now=NOW)
    assert isinstance(result, Rejection) and codes(result) == [("invalid_tenant", "subject")]


@settings(max_examples=200, deadline=None)  # a loaded machine is not a failure
@given(st.dictionaries(st.sampled_from(["submission_id", "instrument", "client_id", "administered_at",
                                        "responses", "total", "session", "amends", "tenant", "clinician_id"]),
                       st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10)
                       | st.dictionaries(st.text(max_size=3), st.integers(-2, 5) | st.none(), max_size=10)))
def test_any_native_shaped_object_gets_an_answer(submission: dict[str, Any]) -> None:
    results = run(json.dumps(submission).encode())
    assert len(results) == 1 and isinstance(results[0], Submission | Rejection)


# --- hostile input: duplicate keys, bounds, exact steps, bounded rejections, ids -----------------------

def native(**changes: Any) -> dict[str, Any]:
    submission: dict[str, Any] = json.loads(body("phq9-complete"))
    submission.update(changes)
    return submission


def test_a_risk_item_given_twice_is_refused_rather_than_read_last_wins() -> None:
    # {"9": 3, "9": 0}: a last-wins reader sees 0 and no risk alert would fire.
    rejection = rejected("duplicate-key-item9")
    assert codes(rejection) == [("duplicate_key", "responses.9")]
    [problem] = rejection.problems
    assert "'9'" in problem.message and "more than once" in problem.message


def test_a_duplicate_key_is_refused_anywhere_in_the_body() -> None:
    raw = json.dumps(native()).replace('"client_id"', '"client_id": "client-0008", "client_id"', 1)
    assert codes(rejected(raw.encode())) == [("duplicate_key", "client_id")]


@pytest.mark.parametrize(("envelope", "field"), [
    ('{{"specversion": "1.0", "id": "e-1", "data": {inner}}}', "data.responses.9"),
    ('{{"specversion": "1.0", "id": "e-1", "data": {quoted}}}', "data.responses.9"),
    ('{{"specversion": "1.0", "id": "e-1", "data_base64": "{encoded}"}}', "data_base64.responses.9"),
])
def test_a_duplicate_key_inside_a_cloudevents_data_is_refused(envelope: str, field: str) -> None:
    inner = body("duplicate-key-item9").decode()
    raw = envelope.format(inner=inner, quoted=json.dumps(inner), encoded=base64.b64encode(inner.encode()).decode())
    assert codes(rejected(raw.encode())) == [("duplicate_key", field)]


def test_a_duplicate_key_that_is_not_code_like_is_not_shown() -> None:
    key = f"{PHI} {'x' * 80}"
    raw = '{"responses": {"1": 1}, ' + f'"{key}": 1, "{key}": 2' + "}"
    [problem] = rejected(raw.encode()).problems
    assert (problem.code, problem.field) == ("duplicate_key", "<key not shown>")
    assert "not shown" in problem.message and "x" * 80 not in problem.message


@pytest.mark.parametrize("when", [
    "0001-01-01T00:00:00+14:00",   # converting to UTC underflows: this crashed scoring
    "1899-12-31T23:59:59Z",
    "1900-01-01T00:30:00+01:00",   # 1899 in UTC
    "9999-12-31T23:59:59-14:00",
    "2026-03-03T12:00:01Z",        # a second more than a day after the message arrived
])
def test_an_administration_time_outside_rapports_bounds_is_out_of_range(when: str) -> None:
    [problem] = rejected(json.dumps(native(administered_at=when)).encode()).problems
    assert (problem.code, problem.field) == ("out_of_range", "administered_at")
    assert problem.expected is not None and "1900-01-01T00:00:00Z to 2026-03-03T12:00:00Z" in problem.expected


@pytest.mark.parametrize("when", ["1900-01-01T00:00:00Z", "2026-03-03T12:00:00Z", "2026-03-03T13:00:00+01:00"])
def test_an_administration_time_at_the_bounds_is_accepted(when: str) -> None:
    [submission] = run(native(administered_at=when))
    assert isinstance(submission, Submission), submission


def test_the_bounds_follow_the_time_the_message_arrived() -> None:
    payload = json.dumps(native(administered_at="2027-01-01T00:00:00Z")).encode()
    [early] = normalise(payload, tenant="acme", registry=REGISTRY, now=NOW)
    [late] = normalise(payload, tenant="acme", registry=REGISTRY, now=datetime(2027, 1, 1, tzinfo=UTC))
    assert isinstance(early, Rejection) and isinstance(late, Submission)


def test_a_session_number_above_1000_is_out_of_range() -> None:
    assert accepted_payload(native(session=1000)).session_number == 1000
    [problem] = rejected(json.dumps(native(session=1001)).encode()).problems
    assert (problem.code, problem.field, problem.expected) == ("out_of_range", "session", "an integer from 0 to 1000")


def accepted_payload(payload: dict[str, Any], registry: Registry = REGISTRY) -> Submission:
    [result] = normalise(json.dumps(payload).encode(), tenant="acme", registry=registry, now=NOW,
                         licensed=frozenset({"srs"}))
    assert isinstance(result, Submission), result
    return result


def test_a_value_within_the_tolerance_of_a_step_is_kept_as_that_step() -> None:
    submission = accepted_payload(native(responses={**{str(n): v for n, v in ANSWERS.items()},
                                                    "1": 5e-324, "2": 2.0000000001, "3": -1e-12}))
    assert submission.responses == {**ANSWERS, 1: 0.0, 2: 2.0, 3: 0.0}
    assert [repr(submission.responses[n]) for n in (1, 2, 3)] == ["0.0", "2.0", "0.0"]


def test_a_visual_analogue_scale_keeps_its_decimal_step_exactly() -> None:
    srs = load_registry()
    # 73 * 0.1 is 7.300000000000001 and 0.1 + 0.2 is 0.30000000000000004 in binary floating point.
    responses = {"1": 7.3, "2": 73 * 0.1, "3": 0.1 + 0.2, "4": 10.0000000000001}
    submission = accepted_payload(native(instrument="srs", responses=responses), srs)
    assert submission.responses == {1: 7.3, 2: 7.3, 3: 0.3, 4: 10.0}


def test_a_value_off_the_steps_is_still_refused_and_named_precisely() -> None:
    [problem] = rejected(json.dumps(native(responses={**{str(n): v for n, v in ANSWERS.items()},
                                                      "2": 2.0000001})).encode()).problems
    assert (problem.code, problem.field, problem.message) == ("out_of_range", "responses.2",
                                                              "phq9 item 2 has value 2.0000001")


@pytest.mark.parametrize("number", ["1e309", "-1e309", "1E400"])
@pytest.mark.parametrize("where", ["response", "total"])
def test_a_number_too_large_to_be_finite_is_refused(number: str, where: str) -> None:
    raw = json.dumps(native(total=0) if where == "total" else native()).encode()
    raw = raw.replace(b'"total": 0', b'"total": ' + number.encode()) if where == "total" \
        else raw.replace(b'"9": 0', b'"9": ' + number.encode())
    rejection = rejected(raw)
    assert codes(rejection) == [("not_a_number", "total" if where == "total" else "responses.9")]


def test_eighty_thousand_bad_response_keys_name_fifty_and_count_the_rest() -> None:
    responses = {f"q{n}": 1 for n in range(80_000)}
    rejection = rejected(json.dumps(native(responses=responses)).encode())
    assert len(rejection.problems) == 51
    assert {p.code for p in rejection.problems[:50]} == {"unknown_item"}
    last = rejection.problems[-1]
    assert (last.code, last.message) == ("more_problems", "and 79,950 more problems of the same kinds: unknown_item")


def test_fifty_problems_are_named_without_a_count() -> None:
    rejection = rejected(json.dumps(native(responses={f"q{n}": 1 for n in range(50)})).encode())
    assert len(rejection.problems) == 50 and rejection.problems[-1].code == "unknown_item"


@pytest.mark.parametrize(("field", "value"), [
    ("clinician_id", "clinician.03"), ("clinician_id", "clinician-*"), ("clinician_id", "clinician->"),
    ("clinician_id", "clinician-03\n"), ("client_id", "client*"), ("client_id", "client>0007"),
    ("client_id", "client-0007\n"), ("client_id", "client\x000007"), ("episode_id", "episode\u202e"),
    ("submission_id", "sub-0001\r"), ("submission_id", "s" * 100_000), ("client_id", PHI * 10_000),
])
def test_an_id_a_subject_or_a_log_line_could_not_hold_is_refused_and_never_echoed(field: str, value: str) -> None:
    rejection = rejected(json.dumps(native(**{field: value})).encode())
    assert codes(rejection) == [("invalid_id", field)]
    [problem] = rejection.problems
    assert problem.message == f"{field} breaks the id rule" and len(problem.expected or "") < 200
    if field == "submission_id":
        assert rejection.submission_id is None
