"""Hostile input at ingest: whatever arrives, every message gets an answer, a rejection stays small and
never repeats what it was sent, and an accepted submission holds nothing a later step could trip on.

The fixtures (synthetic people) are mutated: fields dropped, repeated as duplicate keys, retyped to
NaN, 1e309, huge numbers, 100 KB strings, control characters and ids a NATS subject cannot hold;
free text and long keys carry MARKER, which no problem may ever contain.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rapport.services.ingest.normalise import Rejection, normalise
from rapport.shared.contracts.submission import Submission, SubmissionRejected
from rapport.shared.contracts.tenancy import ID_PATTERN, SUBJECT_TOKEN_PATTERN
from rapport.shared.instruments import load_registry
from rapport.shared.instruments.validation import on_step

pytestmark = pytest.mark.hostile

FIXTURES = Path(__file__).parents[1] / "fixtures"
REGISTRY = load_registry()
LICENSED = frozenset(i.id for i in REGISTRY)
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # the fixtures were given that morning
MARKER = "SYNTHETIC-PHI-MARKER"
# Where MARKER is planted it is never code-like (spaces, or longer than any code or id may be), so no
# rule that shows a code-like value or key may show it.
FREE_TEXT = f"Jane {MARKER} Roe, 12 Synthetic Street"
LONG_KEY = f"{MARKER}-" * 4
LONG_TEXT = MARKER * 10
HUGE_TEXT = f"{MARKER} " * 5_000  # 100 KB

MAX_PROBLEMS = 51  # fifty named, one counting the rest
MAX_MESSAGE = 300
MAX_EVENT = 100_000  # bytes of one serialised rejection: the broker takes 1 MB


@dataclass(frozen=True)
class Raw:
    """A JSON token written as is: what json.dumps will not write (NaN, 1e309)."""

    token: str


@dataclass(frozen=True)
class Twice:
    """An object written with one of its keys twice, the first time with another value."""

    value: dict[str, Any]
    key: str
    first: Any


def dump(node: Any) -> str:
    if isinstance(node, Raw):
        return node.token
    if isinstance(node, Twice):
        pairs = [(node.key, node.first), *node.value.items()]
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in pairs) + "}"
    if isinstance(node, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in node.items()) + "}"
    if isinstance(node, list):
        return "[" + ",".join(dump(v) for v in node) + "]"
    return json.dumps(node)


def fixture(path: Path) -> Any:
    return json.loads(path.read_bytes())


ALL_FIXTURES = sorted((FIXTURES / "native").glob("*.json")) + sorted((FIXTURES / "fhir").glob("*.json"))
BAD_IDS = ["clinician.03", "clinician-*", "clinician->", "a.*.>", "client\n0007", "client-0007\x00", "\u202eclient",
           "client-0007\r\n", "x" * 100_000, f"{MARKER} 0007", LONG_TEXT, ""]
RAW_NUMBERS = [Raw(t) for t in ("NaN", "Infinity", "-Infinity", "1e309", "-1e309", "1E400", "5e-324",
                                "2.0000000001", "-0.0", "1" + "0" * 400, "123456789012345678901234567890")]
hostile_values = st.recursive(
    st.sampled_from([None, True, False, 0, -1, 1001, 2**63, 1e308, -1e-300, 7.3, "", "2", "1e309", FREE_TEXT,
                     LONG_TEXT, HUGE_TEXT, "\x00\x1f\x7f", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59Z",
                     "2026-03-03T12:00:01Z", "1899-12-31T23:59:59Z", "Patient/" + LONG_TEXT,
                     "Practitioner/clinician.03", "urn:uuid:" + LONG_TEXT, *BAD_IDS, *RAW_NUMBERS]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["value", "valueDecimal", "valueInteger", "reference", "linkId", "answer", "item", "code",
                         "url", "extension", LONG_KEY, FREE_TEXT]), children, max_size=3),
    max_leaves=6,
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


def _at(tree: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        tree = tree[step]
    return tree


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    tree: Any = fixture(draw(st.sampled_from(ALL_FIXTURES)))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(tree) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _at(tree, path[:-1]), path[-1]
        if isinstance(parent, Twice | Raw):
            continue
        action = draw(st.sampled_from(["drop", "retype", "retype", "duplicate", "plant", "bad_id", "widen", "nudge",
                                       "nudge"]))
        if action == "nudge":  # floating-point noise on a number, which may still be accepted
            value = parent[key]
            if isinstance(value, int | float) and not isinstance(value, bool):
                parent[key] = Raw(repr(float(value) + draw(st.sampled_from([5e-324, 1e-10, -1e-10, 1e-7, 0.1]))))
        elif action == "drop":
            del parent[key]
        elif action == "retype":
            parent[key] = draw(hostile_values)
        elif action == "duplicate" and isinstance(parent, dict):
            # The first occurrence is the one a last-wins reader would drop.
            parent[key] = parent[key]
            container = _at(tree, path[:-2]) if len(path) > 1 else None
            twice = Twice(dict(parent), key, draw(hostile_values))
            if container is None:
                tree = twice
            else:
                container[path[-2]] = twice
        elif action == "plant" and isinstance(parent, dict):
            parent[draw(st.sampled_from([LONG_KEY, FREE_TEXT, "text", "display", "note"]))] = FREE_TEXT
        elif action == "bad_id":
            parent[key] = draw(st.sampled_from(BAD_IDS))
        elif action == "widen" and isinstance(parent, list) and parent:
            parent.extend([parent[0]] * draw(st.integers(1, 200)))
    raw = dump(tree)
    wrap = draw(st.sampled_from(["none", "none", "data", "string", "base64"]))
    if wrap == "data":
        raw = '{"specversion":"1.0","id":"e-1","source":"ehr","type":"t","data":' + raw + "}"
    elif wrap == "string":
        raw = '{"specversion":"1.0","id":"e-1","source":"ehr","type":"t","data":' + json.dumps(raw) + "}"
    elif wrap == "base64":
        raw = '{"specversion":"1.0","id":"e-1","data_base64":"' + base64.b64encode(raw.encode()).decode() + '"}'
    return raw.encode()


def answered_safely(body: bytes) -> list[Submission | Rejection]:
    results = normalise(body, tenant="acme", registry=REGISTRY, licensed=LICENSED, now=NOW)
    assert results and all(isinstance(r, Submission | Rejection) for r in results)
    for result in results:
        if isinstance(result, Rejection):
            assert 1 <= len(result.problems) <= MAX_PROBLEMS
            assert result.submission_id is None or ID_PATTERN.fullmatch(result.submission_id)
            assert result.instrument is None or result.instrument in REGISTRY
            rejected = SubmissionRejected(submission_id=result.submission_id, inbound_message_id="m-1",
                                          source_format=result.source_format, problems=result.problems)
            assert len(rejected.model_dump_json()) < MAX_EVENT
            problems = result.problems
        else:
            stores_nothing_risky(result)
            problems = result.warnings
        for problem in problems:
            for text in (problem.field, problem.message, problem.expected or ""):
                assert len(text) <= MAX_MESSAGE and MARKER not in text and "Jane" not in text, problem
    return results


def stores_nothing_risky(submission: Submission) -> None:
    assert ID_PATTERN.fullmatch(submission.submission_id) and ID_PATTERN.fullmatch(submission.client_id)
    assert submission.episode_id is None or ID_PATTERN.fullmatch(submission.episode_id)
    assert submission.clinician_id is None or SUBJECT_TOKEN_PATTERN.fullmatch(submission.clinician_id)
    assert datetime(1900, 1, 1, tzinfo=UTC) <= submission.administered_at <= NOW + timedelta(days=1)
    submission.administered_at.astimezone(UTC)  # what crashed scoring for year 1 at +14:00
    assert submission.session_number is None or 0 <= submission.session_number <= 1000
    instrument = REGISTRY.get(submission.instrument)
    assert instrument is not None
    for number, value in submission.responses.items():
        item = instrument.item(number)
        assert item is not None
        assert value is None or on_step(item, value) == value  # exactly a step of the scale
    assert submission.reported_total is None or math.isfinite(submission.reported_total)


# --- properties ------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated())
def test_any_mutation_of_a_fixture_gets_a_safe_answer(body: bytes) -> None:
    answered_safely(body)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode)
       | hostile_values.map(lambda v: dump(v).encode()))
def test_any_bytes_get_a_safe_answer(body: bytes) -> None:
    answered_safely(body)


# --- the explicit cases ----------------------------------------------------------------------------

def _native(**changes: Any) -> dict[str, Any]:
    submission: dict[str, Any] = fixture(FIXTURES / "native" / "phq9-complete.json")
    submission.update(changes)
    return submission


def _questionnaire_response(**changes: Any) -> dict[str, Any]:
    response: dict[str, Any] = fixture(FIXTURES / "fhir" / "qr-answer-decimal.json")
    response.update(changes)
    return response


def only(body: bytes) -> Rejection:
    [result] = answered_safely(body)
    assert isinstance(result, Rejection), result
    return result


def test_a_900_kb_body_of_bad_response_keys_is_one_small_rejection() -> None:
    body = dump(_native(responses={f"{LONG_KEY}{n}": 1 for n in range(9_000)})).encode()
    assert len(body) > 800_000
    rejection = only(body)
    assert len(rejection.problems) == MAX_PROBLEMS and rejection.problems[-1].code == "more_problems"


def test_a_900_kb_questionnaire_response_of_unknown_items_is_one_small_rejection() -> None:
    items = [{"linkId": f"{FREE_TEXT} {n}", "answer": [{"valueString": FREE_TEXT}]} for n in range(15_000)]
    body = dump(_questionnaire_response(item=items)).encode()
    assert len(body) > 800_000
    rejection = only(body)
    assert len(rejection.problems) == MAX_PROBLEMS and rejection.problems[-1].code == "more_problems"


def test_thousands_of_duplicate_keys_are_one_small_rejection() -> None:
    responses = ",".join(f'"{n}":0,"{n}":3' for n in range(1, 40_000))
    body = dump(_native(responses={})).replace('"responses":{}', '"responses":{' + responses + "}").encode()
    rejection = only(body)
    assert {p.code for p in rejection.problems} == {"duplicate_key", "more_problems"}
    assert rejection.problems[-1].message == "and 39,949 more problems of the same kinds: duplicate_key"


@pytest.mark.parametrize("body", [
    b"[" * 100_000,
    b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    ('{"specversion":"1.0","data":' + json.dumps('{"a":' * 50_000 + "1" + "}" * 50_000) + "}").encode(),
    b'{"responses":' + b'{"a":' * 900 + b'{"x":1,"x":2}' + b"}" * 900 + b"}",
    dump(_questionnaire_response(item=[{"linkId": "g", "item": [{"linkId": "g", "item": []}] * 2}] * 2)).encode(),
], ids=["deep-array", "deep-object", "deep-in-cloudevent-data", "deep-duplicate-key", "groups"])
def test_a_deeply_nested_body_gets_a_safe_answer(body: bytes) -> None:
    answered_safely(body)


def test_deep_fhir_items_stop_at_ten_levels() -> None:
    item: dict[str, Any] = {"linkId": "1", "answer": [{"valueInteger": 1}]}
    for _ in range(250):  # 750 JSON levels: under the parser's limit, far over the reader's
        item = {"linkId": "g", "item": [item]}
    answered_safely(json.dumps(_questionnaire_response(item=[item])).encode())


@pytest.mark.parametrize("field", ["submission_id", "client_id", "episode_id", "clinician_id", "instrument", "tenant",
                                   "administered_at"])
@pytest.mark.parametrize("value", [HUGE_TEXT, "x" * 100_000, FREE_TEXT, "a.b", "a*b", "a>b", "a\x00b", "a\nb"])
def test_a_hostile_native_string_is_refused_and_never_echoed(field: str, value: str) -> None:
    [result] = answered_safely(dump(_native(**{field: value})).encode())
    if value == "a.b" and field in ("submission_id", "client_id", "episode_id"):
        assert isinstance(result, Submission)  # dots as FHIR ids have them: no subject is built from these
    else:
        assert isinstance(result, Rejection)


@pytest.mark.parametrize("value", [HUGE_TEXT, FREE_TEXT, LONG_TEXT, "a\x00b"])
@pytest.mark.parametrize("where", ["id", "status", "questionnaire", "authored", "linkId", "valueString", "code",
                                   "display", "subject", "author", "basedOn"])
def test_a_hostile_fhir_string_is_never_echoed(where: str, value: str) -> None:
    response = _questionnaire_response()
    if where in ("linkId", "valueString"):
        response["item"][0] = {"linkId": value, "answer": [{"valueString": value}]}
    elif where in ("code", "display"):
        response["item"][0]["answer"] = [{"valueCoding": {where: value}}]
    elif where in ("subject", "author"):
        response[where] = {"reference": f"Practitioner/{value}", "display": value}
    elif where == "basedOn":
        response[where] = [{"reference": f"EpisodeOfCare/{value}"}]
    else:
        response[where] = value
    answered_safely(dump(response).encode())


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e309", "-1e309", "1E400"])
@pytest.mark.parametrize("shape", ["native-response", "native-total", "native-session", "fhir-decimal", "fhir-integer",
                                   "fhir-quantity", "fhir-weight", "observation"])
def test_nan_and_infinity_are_refused_wherever_a_number_is_read(token: str, shape: str) -> None:
    number = Raw(token)
    if shape == "native-response":
        tree: Any = _native(responses={**_native()["responses"], "9": number})
    elif shape == "native-total":
        tree = _native(responses=None, total=number)
        del tree["responses"]
    elif shape == "native-session":
        tree = _native(session=number)
    elif shape == "observation":
        tree = fixture(FIXTURES / "fhir" / "observation-total.json")
        tree["valueQuantity"]["value"] = number
    else:
        tree = _questionnaire_response()
        answer = {"fhir-decimal": {"valueDecimal": number}, "fhir-integer": {"valueInteger": number},
                  "fhir-quantity": {"valueQuantity": {"value": number}},
                  "fhir-weight": {"valueCoding": {"code": "a", "extension": [
                      {"url": "http://hl7.org/fhir/StructureDefinition/itemWeight", "valueDecimal": number}]}}}[shape]
        tree["item"][8]["answer"] = [answer]
    only(dump(tree).encode())


def test_a_duplicated_risk_item_in_every_form_is_refused() -> None:
    native = dump(_native()).replace('"9":0', '"9":3,"9":0')
    fhir = dump(_questionnaire_response()).replace('{"valueDecimal":0.0}]}]',
                                                   '{"valueDecimal":3,"valueDecimal":0.0}]}]')
    for body in (native, fhir, '{"specversion":"1.0","data":' + native + "}"):
        assert "duplicate_key" in {p.code for p in only(body.encode()).problems}
