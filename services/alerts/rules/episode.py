"""Which of a batch's episodes must be evaluated again from their first score (pure).

A score administered before the latest one the episode has seen, an amended score and a re-placed
one (scoring re-sent it after a late score) change what came after them, so the episode is replayed
in administration order; a score that comes after everything seen is evaluated on the stored state.
Deciding this up front lets the handler read every replayed episode's scores and alerts in one
query per table for the whole batch."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rapport.services.alerts.rules.state import EpisodeState
from rapport.shared.contracts.score import ScoreComputed


def needs_replay(state: EpisodeState | None, scores: Sequence[ScoreComputed]) -> bool:
    """True when the episode's scores of this batch (in arrival order) cannot all be taken in turn."""
    latest: datetime | None = state.latest_at if state is not None else None
    for score in scores:
        if latest is not None and (score.administered_at < latest or score.supersedes_revision
                                   or score.re_placed_by):
            return True
        latest = score.administered_at if latest is None else max(latest, score.administered_at)
    return False
