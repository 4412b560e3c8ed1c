"""Episodes for submissions that name none: a new episode after a gap in the client's administrations.

When the source gives an episode id (native `episode_id`; FHIR the episode extension or `basedOn` EpisodeOfCare), it
is used as given. Otherwise the client's administrations without one are split into episodes
wherever more than `gap` passes between two of them: a client coming back after a long break starts
a new episode with a new baseline, instead of being compared with a score from long ago.

An administration joins the client's episode whose span, widened by the gap on both sides, holds it
(the latest such episode when several do), and widens that span; else it starts a new episode named
`auto-<date of the administration that opened it>` (usually the first; with late or out-of-order
arrivals, whichever was placed first). A late administration may join an episode at either end. An
amended submission stays in the episode it was first placed in, and an episode once given is never
changed, even when a late administration would have bridged two of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

PREFIX = "auto-"


@dataclass(frozen=True)
class Span:
    """An episode of a client made by the gap rule: its first and latest administration."""

    episode_id: str
    first_at: datetime
    last_at: datetime

    def holds(self, at: datetime, gap: timedelta) -> bool:
        return self.first_at - gap <= at <= self.last_at + gap

    def widened(self, at: datetime) -> Span:
        return replace(self, first_at=min(self.first_at, at), last_at=max(self.last_at, at))


def place(spans: Sequence[Span], at: datetime, gap: timedelta) -> tuple[Span, list[Span]]:
    """The span `at` belongs to (widened), and the client's spans after placing it."""
    holding = [s for s in spans if s.holds(at, gap)]
    if holding:
        chosen = max(holding, key=lambda s: s.last_at)
        placed = chosen.widened(at)
        return placed, [placed if s.episode_id == chosen.episode_id else s for s in spans]
    name = f"{PREFIX}{at.date().isoformat()}"
    taken = {s.episode_id for s in spans}
    suffix = 2
    while name in taken:  # two episodes starting on one day: only with a gap under a day
        name, suffix = f"{PREFIX}{at.date().isoformat()}-{suffix}", suffix + 1
    placed = Span(name, at, at)
    return placed, [*spans, placed]
