"""Pure scoring: plain functions over an instrument definition and a client's responses."""

from rapport.services.scoring.domain.change import change, clinical, jacobson_truax_cutoff, reliable
from rapport.services.scoring.domain.scoring import band_of, below_concern, in_clinical_range, score
from rapport.services.scoring.domain.talking_therapies import (
    NHS_TALKING_THERAPIES,
    TalkingTherapiesOutcome,
    TalkingTherapiesRule,
    nhs_talking_therapies,
)

__all__ = [
    "NHS_TALKING_THERAPIES",
    "TalkingTherapiesOutcome",
    "TalkingTherapiesRule",
    "band_of",
    "below_concern",
    "change",
    "clinical",
    "in_clinical_range",
    "jacobson_truax_cutoff",
    "nhs_talking_therapies",
    "reliable",
    "score",
]
