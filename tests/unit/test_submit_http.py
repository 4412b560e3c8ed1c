"""`rapport submit --http`'s pure parts: where each file goes, and the answer printed in the broker
path's lines."""

from __future__ import annotations

from rapport.submit import describe_native, endpoint_for


def test_each_file_goes_to_the_endpoint_of_what_it_is() -> None:
    assert endpoint_for(b'{"resourceType": "QuestionnaireResponse"}') == (
        "/fhir/QuestionnaireResponse", "application/fhir+json")
    assert endpoint_for(b'{"resourceType": "Bundle", "type": "batch"}') == ("/fhir", "application/fhir+json")
    assert endpoint_for(b'{"resourceType": "Appointment"}')[0] == "/fhir/Appointment"
    assert endpoint_for(b'{"resourceType": "../admin"}')[0] == "/api/v1/submissions"  # never a path of its own
    assert endpoint_for(b'{"submission_id": "sub-1"}') == ("/api/v1/submissions", "application/json")
    assert endpoint_for(b"not json")[0] == "/api/v1/submissions"  # the gateway says what is wrong with it


def test_an_http_answer_is_printed_as_the_broker_path_prints_it() -> None:
    accepted = {"status": "accepted", "submission_id": "sub-1", "instrument": "phq9", "revision": 2,
                "disposition": "amended", "warnings": [{"field": "total", "message": "stated total differs"}]}
    rejected = {"status": "rejected", "submission_id": None, "problems": [
        {"field": "responses.2", "message": "value 7", "expected": "0 to 3"},
        {"field": "client_id", "message": "missing"}]}
    assert describe_native(accepted) == ["ACCEPTED sub-1 (phq9, revision 2, amended)",
                                         "  warning total: stated total differs"]
    assert describe_native({"answers": [rejected, accepted]})[:3] == [
        "REJECTED (no id)", "  - responses.2: value 7 (expected 0 to 3)", "  - client_id: missing"]
