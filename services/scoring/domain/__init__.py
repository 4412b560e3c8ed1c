"""Pure scoring: plain functions over an instrument definition and a client's responses."""

from services.scoring.domain.change import change
from services.scoring.domain.scoring import score

__all__ = ["change", "score"]
