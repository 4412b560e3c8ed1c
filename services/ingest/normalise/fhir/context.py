"""What the modules of the FHIR reader share: the context of one document, its error, and the Submission builder."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from rapport.services.ingest.normalise.outcome import TenantMapping
from rapport.services.ingest.normalise.reading import shown
from rapport.shared.contracts.problems import Problem
from rapport.shared.contracts.submission import Submission
from rapport.shared.instruments import Instrument, Registry

LOINC_CODE = re.compile(r"^\d{1,7}-\d$")


class Invalid(Exception):
    def __init__(self, problems: list[Problem], instrument: Instrument | None = None) -> None:
        self.problems = problems
        self.instrument = instrument  # when it was identified before the problems were found


# fullUrl -> the entry's resource, for `urn:` references between entries; None when two entries share it.
Bundled = Mapping[str, dict[str, Any] | None]


@dataclass
class Context:
    tenant: str
    registry: Registry
    mapping: TenantMapping
    now: datetime  # when the message was received: administration times after it (plus skew) are refused
    catalogue: TenantMapping = field(default_factory=TenantMapping)  # published Questionnaires (fhir/catalogue.py)
    definitions: dict[str, dict[str, Any]] = field(default_factory=dict)  # bundled Questionnaires by url
    bundled_responses: set[str] = field(default_factory=set)  # references to the Bundle's responses
    full_urls: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # urn:uuid fullUrl -> resource
    observations: dict[str, int] = field(default_factory=dict)  # fullUrl or Observation/<id> -> entry index


def _objects(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _submission(instrument: Instrument, **fields: Any) -> Submission:
    """Every field was checked above; the model's own validation is the last line of defence."""
    try:
        return Submission(instrument=instrument.id, **fields)
    except ValidationError as exc:
        raise Invalid([Problem(field=".".join(str(p) for p in e["loc"]) or "body", code="invalid_submission",
                               message=f"{e['msg']}") for e in exc.errors(include_input=False, include_url=False,
                                                                          include_context=False)],
                      instrument) from None



def read_status(resource: dict[str, Any], allowed: tuple[str, ...], problems: list[Problem]) -> Any:
    """The resource's status; only a finished resource is a submission, and `allowed` say which are."""
    status = resource.get("status")
    if status not in allowed:
        problems.append(Problem(field="status", code="status_not_final", message=f"status is {shown(status)}",
                                expected=f"{', '.join(allowed[:-1])} or {allowed[-1]}"))
    return status
