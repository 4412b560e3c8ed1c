"""Reads and writes of alerts, transitions, episode state and the scores the service has seen.

Episode rows carry a version: a writer updates `WHERE version = <what it read>`, so two replicas
evaluating the same episode at once cannot both win; the loser retries the message and re-reads.
On PostgreSQL the rows are also locked FOR UPDATE while a batch works on them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Table, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.alerts.models import EpisodeRecord, SeenScore, StoredAlert, StoredTransition
from shared.contracts.alert import Alert, AlertTransition
from shared.contracts.score import ScoreComputed
from shared.db.engine import is_postgres
from shared.db.upsert import insert_ignoring_conflicts
from shared.messaging.retry import ConcurrencyConflict

EpisodeKey = tuple[str, str, str]  # tenant, client, episode

episodes = cast(Table, EpisodeRecord.__table__)
alerts = cast(Table, StoredAlert.__table__)
transitions = cast(Table, StoredTransition.__table__)
seen = cast(Table, SeenScore.__table__)


async def load_episodes(
    session: AsyncSession, keys: Iterable[EpisodeKey]
) -> dict[EpisodeKey, tuple[int, dict[str, Any]]]:
    """(version, state document) per episode that has one. Locked on PostgreSQL, in key order."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    query = select(episodes).where(tuple_(episodes.c.tenant, episodes.c.client_id, episodes.c.episode_id).in_(wanted))
    if is_postgres(session):
        query = query.order_by(episodes.c.tenant, episodes.c.client_id, episodes.c.episode_id).with_for_update()
    rows = await session.execute(query)
    return {(r.tenant, r.client_id, r.episode_id): (r.version, r.state) for r in rows}


async def save_episode(
    session: AsyncSession, key: EpisodeKey, version: int | None, state: dict[str, Any], latest_at: datetime
) -> None:
    tenant, client, episode = key
    if version is None:
        await session.execute(episodes.insert().values(
            tenant=tenant, client_id=client, episode_id=episode, latest_at=latest_at, version=1, state=state))
        return
    result: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
        update(episodes)
        .where(episodes.c.tenant == tenant, episodes.c.client_id == client, episodes.c.episode_id == episode,
               episodes.c.version == version)
        .values(state=state, latest_at=latest_at, version=version + 1)
    )
    if result.rowcount != 1:
        raise ConcurrencyConflict("episode state changed under this transaction")


async def open_alerts(session: AsyncSession, keys: Iterable[EpisodeKey]) -> dict[EpisodeKey, list[Alert]]:
    wanted = sorted(set(keys))
    found: dict[EpisodeKey, list[Alert]] = {k: [] for k in wanted}
    if not wanted:
        return found
    rows = await session.execute(
        select(alerts.c.tenant, alerts.c.client_id, alerts.c.episode_id, alerts.c.document).where(
            tuple_(alerts.c.tenant, alerts.c.client_id, alerts.c.episode_id).in_(wanted),
            alerts.c.status != "resolved",
        )
    )
    for r in rows:
        found[(r.tenant, r.client_id, r.episode_id)].append(Alert.model_validate(r.document))
    return found


async def episode_alerts(session: AsyncSession, key: EpisodeKey) -> list[Alert]:
    tenant, client, episode = key
    rows = await session.execute(select(alerts.c.document).where(
        alerts.c.tenant == tenant, alerts.c.client_id == client, alerts.c.episode_id == episode))
    return [Alert.model_validate(d) for d in rows.scalars()]


async def get_alert(session: AsyncSession, tenant: str, alert_id: str) -> Alert | None:
    query = select(alerts.c.document).where(alerts.c.alert_id == alert_id, alerts.c.tenant == tenant)
    if is_postgres(session):
        query = query.with_for_update()
    document = (await session.execute(query)).scalar_one_or_none()
    return Alert.model_validate(document) if document is not None else None


async def remember_scores(session: AsyncSession, scores: Sequence[ScoreComputed]) -> None:
    """Keep the service's own copy of every score (latest revision), for replays."""
    for score in scores:
        row = {
            "tenant": score.tenant, "submission_id": score.submission_id, "client_id": score.client_id,
            "episode_id": score.episode_id, "revision": score.revision, "administered_at": score.administered_at,
            "document": score.model_dump(mode="json"),
        }
        inserted = await session.execute(
            insert_ignoring_conflicts(session, seen, ["tenant", "submission_id"]).returning(seen.c.submission_id),
            [row],
        )
        if inserted.first() is None:
            await session.execute(
                update(seen)
                .where(seen.c.tenant == score.tenant, seen.c.submission_id == score.submission_id,
                       seen.c.revision <= score.revision)
                .values(row)
            )


async def episode_scores(session: AsyncSession, key: EpisodeKey) -> list[ScoreComputed]:
    tenant, client, episode = key
    rows = await session.execute(
        select(seen.c.document)
        .where(seen.c.tenant == tenant, seen.c.client_id == client, seen.c.episode_id == episode)
        .order_by(seen.c.administered_at, seen.c.submission_id)
    )
    return [ScoreComputed.model_validate(d) for d in rows.scalars()]


async def record(session: AsyncSession, changes: Sequence[AlertTransition], event_ids: Sequence[str]) -> None:
    """Upsert each alert's latest state and append its transitions (the audit trail)."""
    latest: dict[str, Alert] = {}
    for change in changes:
        latest[change.alert.alert_id] = change.alert
    if latest:
        existing = set((await session.execute(
            select(alerts.c.alert_id).where(alerts.c.alert_id.in_(list(latest)))
        )).scalars())
        for alert in latest.values():
            row = _alert_row(alert)
            if alert.alert_id in existing:
                await session.execute(update(alerts).where(alerts.c.alert_id == alert.alert_id).values(row))
            else:
                await session.execute(alerts.insert().values(row))
    if changes:
        await session.execute(transitions.insert(), [
            {"event_id": event_id, "alert_id": c.alert.alert_id, "tenant": c.alert.tenant,
             "transition": c.transition, "by": c.by, "at": c.at, "reason": c.reason}
            for c, event_id in zip(changes, event_ids, strict=True)
        ])


def _alert_row(alert: Alert) -> dict[str, Any]:
    return {
        "alert_id": alert.alert_id, "tenant": alert.tenant, "client_id": alert.client_id,
        "episode_id": alert.episode_id, "clinician_id": alert.clinician_id, "kind": alert.kind,
        "instrument": alert.instrument, "subscale": alert.subscale, "severity": alert.severity,
        "status": alert.status, "opened_at": alert.opened_at, "updated_at": alert.updated_at,
        "version": alert.version, "document": alert.model_dump(mode="json"),
    }
