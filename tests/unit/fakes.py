"""In-memory repositories of our own code, for handler-logic tests without a database (issue 10):
fakes of Rapport's ports, never of a broker or a database."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from rapport.services.ingest.admission import Admission
from rapport.services.ingest.repository import Key
from rapport.services.ingest.unit_of_work import IngestUnitOfWork
from rapport.services.scoring.episodes import Span
from rapport.services.scoring.repository import ClientKey, SeriesKey
from rapport.services.scoring.series import Point, Summary
from rapport.services.scoring.unit_of_work import ScoringUnitOfWork
from rapport.shared.contracts.score import ScoreComputed
from rapport.shared.contracts.submission import Submission


class InMemorySubmissions:
    def __init__(self) -> None:
        self.stored: dict[Key, tuple[int, str, Submission]] = {}
        self.loads = 0

    async def load_stored(self, keys: Sequence[Key]) -> dict[Key, tuple[int, str]]:
        self.loads += 1
        return {k: self.stored[k][:2] for k in keys if k in self.stored}

    async def save(self, admitted: Sequence[tuple[Submission, Admission]], now: datetime) -> None:
        for submission, admission in admitted:
            self.stored[(submission.tenant, submission.submission_id)] = (
                admission.revision, admission.content_hash, submission)


def ingest_unit_of_work(now: datetime, submissions: InMemorySubmissions | None = None) -> IngestUnitOfWork:
    return IngestUnitOfWork(submissions or InMemorySubmissions(), now)


class InMemoryRecord:
    """Scoring's record as dictionaries, with the semantics SqlRecord has: a newer revision of a score
    replaces the older, summaries are inserted or replaced, spans are the client's episodes."""

    def __init__(self) -> None:
        self.scores: dict[tuple[str, str], ScoreComputed] = {}
        self.summaries: dict[SeriesKey, Summary] = {}
        self.spans: dict[ClientKey, list[Span]] = {}
        self.reads: list[str] = []

    async def load_summaries(self, keys: Sequence[SeriesKey]) -> dict[SeriesKey, Summary]:
        self.reads.append("summaries")
        return {k: self.summaries[k] for k in keys if k in self.summaries}

    async def load_points(self, keys: Collection[SeriesKey]) -> dict[SeriesKey, list[Point]]:
        if keys:
            self.reads.append("points")
        points: dict[SeriesKey, list[Point]] = {k: [] for k in keys}
        for s in self.scores.values():
            key = (s.tenant, s.client_id, s.episode_id, s.score.instrument)
            if key in points:
                points[key].append(Point(s.submission_id, s.score.total, s.administered_at))
        return points

    async def save(self, computed: Sequence[ScoreComputed], summaries: dict[SeriesKey, Summary],
                   known: set[SeriesKey]) -> None:
        for c in computed:
            stored = self.scores.get((c.tenant, c.submission_id))
            if stored is None or stored.revision <= c.revision:
                self.scores[(c.tenant, c.submission_id)] = c
        self.summaries |= summaries

    async def stored_scores(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], ScoreComputed]:
        if keys:
            self.reads.append("scores")
        return {k: self.scores[k] for k in keys if k in self.scores}

    async def placed_episodes(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        return {k: self.scores[k].episode_id for k in keys if k in self.scores}

    async def load_spans(self, clients: Sequence[ClientKey]) -> dict[ClientKey, list[Span]]:
        return {c: list(self.spans.get(c, [])) for c in clients}

    async def save_spans(self, before: dict[ClientKey, list[Span]], after: dict[ClientKey, list[Span]]) -> None:
        self.spans |= {c: list(spans) for c, spans in after.items()}


def scoring_unit_of_work(now: datetime, record: InMemoryRecord) -> ScoringUnitOfWork:
    return ScoringUnitOfWork(record, now)
