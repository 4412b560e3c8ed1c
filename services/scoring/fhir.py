"""The computed total as a FHIR R4 Observation, so EHRs can file the score next to the response."""

from __future__ import annotations

from typing import Any

from rapport.shared.contracts.score import Scored
from rapport.shared.contracts.submission import Submission
from rapport.shared.instruments import Instrument


def derived_observation(submission: Submission, instrument: Instrument, scored: Scored) -> dict[str, Any] | None:
    """A `survey` Observation with the instrument's LOINC total-score code and `derivedFrom` the
    QuestionnaireResponse it was computed from. None for instruments without a LOINC total code,
    and for total-only submissions (the source already holds the total)."""
    code = instrument.coding.loinc_total
    if code is None or not submission.item_level:
        return None
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "amended" if submission.amends else "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey",
        }]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}], "text": f"{instrument.title} total score"},
        "subject": {"reference": f"Patient/{submission.client_id}"},
        "effectiveDateTime": submission.administered_at.isoformat(),
        "valueQuantity": {"value": scored.total, "unit": "{score}", "system": "http://unitsofmeasure.org",
                          "code": "{score}"},
    }
    if submission.source_format == "fhir-questionnaire-response":
        observation["derivedFrom"] = [{"reference": f"QuestionnaireResponse/{submission.submission_id}"}]
    if scored.band:
        observation["interpretation"] = [{"text": scored.band}]
    return observation
