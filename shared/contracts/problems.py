"""How Rapport says what is wrong with an input: which field, what was found, what was expected."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Problem(BaseModel):
    """One precise thing wrong (or worth a warning) in a submission.

    `field` is a path into the submitted document (`responses.9`, `item[2].answer[0].valueCoding`),
    `code` a stable machine-readable word, `message` a sentence for the person fixing the mapping.
    Messages name items and numeric values, never free text from the payload (it may hold PHI).
    """

    model_config = ConfigDict(frozen=True)

    field: str
    code: str
    message: str
    expected: str | None = Field(default=None, description="what would have been accepted")
