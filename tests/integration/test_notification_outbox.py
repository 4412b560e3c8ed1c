"""The outbox of deliveries on SQLite and PostgreSQL: a delivery queued twice is one row; two senders
claiming at once (two gateway replicas) never hold the same delivery; a claim that runs out lets the
delivery fall due again with the same id; an attempt recorded after its delivery was taken over is
not kept; finished deliveries are pruned with their attempts, pending ones never."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.gateway.notifications.domain import NewDelivery, Next, Tried, delivery_id
from rapport.services.gateway.notifications.models import Delivery, DeliveryAttempt, WebhookEndpoint
from rapport.services.gateway.notifications.repository import (
    Claimed,
    claim_due,
    forget_finished,
    queue,
    record_attempt,
)

NOW = datetime(2026, 3, 9, 10, 0, tzinfo=UTC)
LEASE = timedelta(seconds=45)


def deliveries(tenant: str, count: int, endpoint: str = "endpoint-1") -> list[NewDelivery]:
    return [NewDelivery(id=delivery_id("webhook", tenant, f"event-{n}", endpoint), tenant=tenant, channel="webhook",
                        target_id=endpoint, event_id=f"event-{n}", alert_id=f"alert-{n}", payload=b"{}")
            for n in range(count)]


async def seeded(sessions: async_sessionmaker[AsyncSession], tenant: str, count: int) -> None:
    async with sessions() as session, session.begin():
        session.add(WebhookEndpoint(id="endpoint-1", tenant=tenant, clinician_id=None, url="https://h.example/",
                                    description="", secret="whsec_" + "A" * 44, created_at=NOW, created_by="admin"))
        await queue(session, deliveries(tenant, count), NOW)
        await queue(session, deliveries(tenant, count), NOW)  # a redelivered event: nothing more


async def claim(sessions: async_sessionmaker[AsyncSession], at: datetime, limit: int) -> list[Claimed]:
    async with sessions() as session, session.begin():
        return await claim_due(session, at, limit, LEASE)


async def test_two_senders_claiming_at_once_never_hold_one_delivery(
    sessions: async_sessionmaker[AsyncSession], tenant: str
) -> None:
    await seeded(sessions, tenant, 30)
    async with sessions() as session:
        assert (await session.execute(select(func.count()).select_from(Delivery))).scalar_one() == 30
    first, second = await asyncio.gather(claim(sessions, NOW, 20), claim(sessions, NOW, 20))
    held = [c.id for c in first + second]
    assert len(held) == len(set(held)) == 30
    assert {c.attempt for c in first + second} == {1}
    assert all(c.url == "https://h.example/" and c.secret for c in first + second)
    assert await claim(sessions, NOW + timedelta(seconds=10), 50) == []  # all held


async def test_a_claim_that_runs_out_falls_due_again_and_the_late_sender_does_not_record(
    sessions: async_sessionmaker[AsyncSession], tenant: str
) -> None:
    await seeded(sessions, tenant, 1)
    [late] = await claim(sessions, NOW, 10)
    [again] = await claim(sessions, NOW + LEASE, 10)
    assert (again.id, again.attempt) == (late.id, 2)
    async with sessions() as session, session.begin():
        assert not await record_attempt(session, late, Tried(200), Next("delivered", "delivered", None), NOW,
                                        timedelta(seconds=1))
        assert await record_attempt(session, again, Tried(503), Next("pending", "retried", NOW + timedelta(minutes=5)),
                                    NOW + LEASE, timedelta(milliseconds=20))
    async with sessions() as session:
        [attempt] = (await session.execute(select(DeliveryAttempt))).scalars().all()
        assert (attempt.attempt, attempt.status_code, attempt.outcome) == (2, 503, "retried")
        row = await session.get(Delivery, again.id)
        assert row is not None and (row.status, row.attempts) == ("pending", 2)


async def test_finished_deliveries_are_pruned_with_their_attempts_and_pending_ones_kept(
    sessions: async_sessionmaker[AsyncSession], tenant: str
) -> None:
    await seeded(sessions, tenant, 2)
    done, waiting = await claim(sessions, NOW, 10)
    async with sessions() as session, session.begin():
        await record_attempt(session, done, Tried(200), Next("delivered", "delivered", None), NOW, timedelta(0))
        await record_attempt(session, waiting, Tried(500), Next("pending", "retried", NOW + timedelta(days=30)), NOW,
                             timedelta(0))
    async with sessions() as session, session.begin():
        await forget_finished(session, NOW + timedelta(days=60))
    async with sessions() as session:
        assert [r.id for r in (await session.execute(select(Delivery))).scalars()] == [waiting.id]
        assert [a.delivery_id for a in (await session.execute(select(DeliveryAttempt))).scalars()] == [waiting.id]
