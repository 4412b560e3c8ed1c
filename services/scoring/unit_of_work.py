"""Scoring's unit of work: the longitudinal record a batch reads and writes, in its transaction."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from rapport.services.scoring.episodes import Span
from rapport.services.scoring.repository import ClientKey, SeriesKey, SqlRecord
from rapport.services.scoring.series import Point, Summary
from rapport.shared.contracts.score import ScoreComputed
from rapport.shared.unit_of_work import UnitOfWork


class Record(Protocol):
    """Scores, series summaries and the gap rule's episodes (SqlRecord; an in-memory one in the
    handler tests)."""

    async def load_summaries(self, keys: Sequence[SeriesKey]) -> dict[SeriesKey, Summary]: ...

    async def load_points(self, keys: Collection[SeriesKey]) -> dict[SeriesKey, list[Point]]: ...

    async def save(self, computed: Sequence[ScoreComputed], summaries: dict[SeriesKey, Summary],
                   known: set[SeriesKey]) -> None: ...

    async def stored_scores(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], ScoreComputed]: ...

    async def placed_episodes(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]: ...

    async def load_spans(self, clients: Sequence[ClientKey]) -> dict[ClientKey, list[Span]]: ...

    async def save_spans(self, before: dict[ClientKey, list[Span]], after: dict[ClientKey, list[Span]]) -> None: ...


class ScoringUnitOfWork(UnitOfWork):
    def __init__(self, record: Record, now: datetime) -> None:
        super().__init__(now)
        self.record = record

    @classmethod
    def on(cls, session: AsyncSession, now: datetime) -> ScoringUnitOfWork:
        """The consumer's factory: the batch's session behind the record."""
        return cls(SqlRecord(session), now)
