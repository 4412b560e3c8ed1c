"""Reads and writes of the longitudinal record, a batch at a time."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import cast

from sqlalchemy import Table, bindparam, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from rapport.services.scoring.episodes import Span
from rapport.services.scoring.models import AutoEpisode, Series, StoredScore
from rapport.services.scoring.series import Point, Summary
from rapport.shared.contracts.score import ScoreComputed
from rapport.shared.db.engine import is_postgres
from rapport.shared.db.upsert import upsert

SeriesKey = tuple[str, str, str, str]  # tenant, client, episode, instrument

scores = cast(Table, StoredScore.__table__)
series = cast(Table, Series.__table__)
auto_episodes = cast(Table, AutoEpisode.__table__)
ClientKey = tuple[str, str]  # tenant, client
CLIENT_LOCKS = text(
    "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k"
)


def _score_row(c: ScoreComputed) -> dict[str, object]:
    return {
        "tenant": c.tenant, "submission_id": c.submission_id, "revision": c.revision,
        "client_id": c.client_id, "episode_id": c.episode_id, "instrument": c.score.instrument,
        "administered_at": c.administered_at, "total": c.score.total, "document": c.model_dump(mode="json"),
    }


def _series_row(key: SeriesKey, s: Summary) -> dict[str, object]:
    tenant, client, episode, instrument = key
    return {
        "tenant": tenant, "client_id": client, "episode_id": episode, "instrument": instrument,
        "baseline_total": s.baseline.total, "baseline_at": s.baseline.at,
        "latest_submission": s.latest.submission_id, "latest_total": s.latest.total,
        "latest_at": s.latest.at, "sessions": s.count,
    }


def _key_dict(row: dict[str, object]) -> dict[str, object]:
    return {"tenant": row["tenant"], "client": row["client_id"], "episode": row["episode_id"],
            "instrument": row["instrument"]}


def _values(row: dict[str, object]) -> dict[str, object]:
    names = ("baseline_total", "baseline_at", "latest_submission", "latest_total", "latest_at", "sessions")
    return {n: row[n] for n in names}


class SqlRecord:
    """The longitudinal record in one batch's transaction: scores, series summaries, the gap rule's
    episodes."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def load_summaries(self, keys: Sequence[SeriesKey]) -> dict[SeriesKey, Summary]:
        """The series' summaries; locked on PostgreSQL (in key order) until the batch commits, so two
        replicas never both append to one series (a new series inserted twice fails one on its key)."""
        if not keys:
            return {}
        cols = (series.c.tenant, series.c.client_id, series.c.episode_id, series.c.instrument)
        query = select(series).where(tuple_(*cols).in_(sorted(set(keys))))
        if is_postgres(self._session):
            query = query.order_by(*cols).with_for_update()
        rows = await self._session.execute(query)
        return {
            (r.tenant, r.client_id, r.episode_id, r.instrument): Summary(
                baseline=Point("", r.baseline_total, r.baseline_at),
                latest=Point(r.latest_submission, r.latest_total, r.latest_at),
                count=r.sessions,
            )
            for r in rows
        }

    async def load_points(self, keys: Collection[SeriesKey]) -> dict[SeriesKey, list[Point]]:
        """The stored points of the series, in one query for the batch."""
        if not keys:
            return {}
        cols = (scores.c.tenant, scores.c.client_id, scores.c.episode_id, scores.c.instrument)
        rows = await self._session.execute(
            select(*cols, scores.c.submission_id, scores.c.total, scores.c.administered_at).where(
                tuple_(*cols).in_(sorted(keys)))
        )
        points: dict[SeriesKey, list[Point]] = {key: [] for key in keys}
        for r in rows:
            points[(r.tenant, r.client_id, r.episode_id, r.instrument)].append(
                Point(r.submission_id, r.total, r.administered_at))
        return points

    async def save(self, computed: Sequence[ScoreComputed], summaries: dict[SeriesKey, Summary],
                   known: set[SeriesKey]) -> None:
        """Store scores (a new revision replaces the old) and the series summaries they changed."""
        if computed:
            latest = {(c.tenant, c.submission_id): c for c in computed}  # last revision in the batch wins
            newer = upsert(self._session, scores, ["tenant", "submission_id"],
                           only_if=lambda new: scores.c.revision <= new.revision)
            await self._session.execute(newer, [_score_row(c) for c in latest.values()])
        new_rows = [_series_row(k, s) for k, s in summaries.items() if k not in known]
        old_rows = [_series_row(k, s) for k, s in summaries.items() if k in known]
        if new_rows:
            await self._session.execute(series.insert(), new_rows)
        if old_rows:
            await self._session.execute(
                update(series)
                .where(
                    series.c.tenant == bindparam("k_tenant"), series.c.client_id == bindparam("k_client"),
                    series.c.episode_id == bindparam("k_episode"), series.c.instrument == bindparam("k_instrument"),
                )
                .values(
                    baseline_total=bindparam("baseline_total"), baseline_at=bindparam("baseline_at"),
                    latest_submission=bindparam("latest_submission"), latest_total=bindparam("latest_total"),
                    latest_at=bindparam("latest_at"), sessions=bindparam("sessions"),
                )
                .execution_options(synchronize_session=False),
                [{f"k_{k}": v for k, v in _key_dict(r).items()} | _values(r) for r in old_rows],
            )

    async def stored_scores(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], ScoreComputed]:
        """The stored scores (latest revision) of these (tenant, submission id)s."""
        if not keys:
            return {}
        rows = await self._session.execute(select(scores.c.tenant, scores.c.submission_id, scores.c.document).where(
            tuple_(scores.c.tenant, scores.c.submission_id).in_(sorted(set(keys)))))
        return {(r.tenant, r.submission_id): ScoreComputed.model_validate(r.document) for r in rows}

    async def placed_episodes(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The episode each already-scored submission (tenant, submission id) was placed in."""
        if not keys:
            return {}
        rows = await self._session.execute(select(scores.c.tenant, scores.c.submission_id, scores.c.episode_id).where(
            tuple_(scores.c.tenant, scores.c.submission_id).in_(list(set(keys)))))
        return {(r.tenant, r.submission_id): r.episode_id for r in rows}

    async def load_spans(self, clients: Sequence[ClientKey]) -> dict[ClientKey, list[Span]]:
        """The gap rule's episodes of each client. On PostgreSQL each client is locked first (an advisory
        lock held until the batch commits, taken in key order): a client's first episode has no row to
        lock yet, and two replicas placing two of its sessions at once would each start an episode."""
        wanted = sorted(set(clients))
        found: dict[ClientKey, list[Span]] = {c: [] for c in wanted}
        if not wanted:
            return found
        if is_postgres(self._session):
            keys = [f"rapport:scoring:{tenant}:{client}" for tenant, client in wanted]
            await self._session.execute(CLIENT_LOCKS, {"keys": keys})
        query = select(auto_episodes).where(tuple_(auto_episodes.c.tenant, auto_episodes.c.client_id).in_(wanted))
        for r in await self._session.execute(query):
            found[(r.tenant, r.client_id)].append(Span(r.episode_id, r.first_at, r.last_at))
        return found

    async def save_spans(self, before: dict[ClientKey, list[Span]], after: dict[ClientKey, list[Span]]) -> None:
        """Insert the new episodes, update the widened ones (a concurrent insert fails the batch, which retries)."""
        fresh, widened = [], []
        for client, spans in after.items():
            known = {s.episode_id: s for s in before.get(client, [])}
            for span in spans:
                row = {"tenant": client[0], "client_id": client[1], "episode_id": span.episode_id,
                       "first_at": span.first_at, "last_at": span.last_at}
                if span.episode_id not in known:
                    fresh.append(row)
                elif known[span.episode_id] != span:
                    widened.append({f"k_{k}": row[k] for k in ("tenant", "client_id", "episode_id")} | row)
        if fresh:
            await self._session.execute(auto_episodes.insert(), fresh)
        if widened:
            await self._session.execute(
                update(auto_episodes)
                .where(auto_episodes.c.tenant == bindparam("k_tenant"),
                       auto_episodes.c.client_id == bindparam("k_client_id"),
                       auto_episodes.c.episode_id == bindparam("k_episode_id"))
                .values(first_at=bindparam("first_at"), last_at=bindparam("last_at"))
                .execution_options(synchronize_session=False),
                [{k: v for k, v in row.items() if not k.startswith(("tenant", "client_id", "episode_id"))}
                 for row in widened],
            )
