"""The outbox of deliveries on SQLite and PostgreSQL: the notify consumer's handler queues one delivery
per matching target (a replayed event none more) and refuses forged events; two senders
claiming at once (two gateway replicas) never hold the same delivery; a claim that runs out lets the
delivery fall due again with the same id; an attempt recorded after its delivery was taken over is
not kept; finished deliveries are pruned with their attempts, pending ones never."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.gateway.notifications.domain import NewDelivery, Next, Tried, delivery_id
from rapport.services.gateway.notifications.handlers import QueueDeliveries
from rapport.services.gateway.notifications.models import Delivery, DeliveryAttempt, WebhookEndpoint
from rapport.services.gateway.notifications.repository import (
    Claimed,
    claim_due,
    forget_finished,
    queue,
    record_attempt,
)
from rapport.shared.contracts.alert import Notification
from rapport.shared.messaging.consumer import Inbound
from rapport.shared.messaging.publish import cloud_event
from rapport.shared.messaging.retry import PoisonMessage
from rapport.shared.unit_of_work import SessionUnitOfWork

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


# the consumer's handler, on the same databases


def inbound(tenant: str, subject_tenant: str | None = None, clinician: str = "clinician-03",
            kind: str = "sent") -> Inbound:
    notification = Notification(alert_id="alert-0001", kind="not_on_track", severity="medium", transition="raised",
                                client_id="client-0007", episode_id="episode-0007-1", headline="Not on track",
                                evidence="PHQ-9 14 at session 6.", prompt="Review the plan together.")
    event = cloud_event(entity="notify", verb=kind, service="alerts", tenant=tenant,
                        subject=f"rapport.{tenant}.notify.{clinician}", about="alert-0001", data=notification,
                        event_id="6f1c2d4e-0000-4000-8000-000000000009")
    arrived = subject_tenant or tenant
    return Inbound(message_id=event.event_id, subject=f"rapport.{arrived}.notify.{clinician}", tenant=arrived,
                   body=event.body, deliveries=1)


async def test_the_handler_queues_one_delivery_per_matching_target_and_refuses_forged_events(
    sessions: async_sessionmaker[AsyncSession], tenant: str
) -> None:
    woken: list[str] = []
    handler = QueueDeliveries("https://rapport.example", sent=lambda: woken.append("now"))
    async with sessions() as session, session.begin():
        for target, clinician in (("own", "clinician-03"), ("team", None), ("colleague", "clinician-04")):
            session.add(WebhookEndpoint(id=target, tenant=tenant, clinician_id=clinician, url="https://h.example/",
                                        description="", secret="whsec_" + "A" * 44, created_at=NOW,
                                        created_by="admin"))
    for _ in range(2):  # the event twice (a replay with a new message id): the same two deliveries
        async with sessions() as session, session.begin():
            uow = SessionUnitOfWork(session, NOW)
            await handler(uow, [inbound(tenant)])
        uow.committed()
    async with sessions() as session:
        rows = (await session.execute(select(Delivery.target_id, Delivery.status).order_by(Delivery.target_id))).all()
    assert [tuple(r) for r in rows] == [("own", "pending"), ("team", "pending")]
    assert woken == ["now", "now"]

    async with sessions() as session, session.begin():
        uow = SessionUnitOfWork(session, NOW)
        with pytest.raises(PoisonMessage, match="tenant_mismatch"):
            await handler(uow, [inbound(tenant, subject_tenant=f"{tenant}x")])
        with pytest.raises(PoisonMessage):
            await handler(uow, [Inbound("m", f"rapport.{tenant}.notify.clinician-03", tenant, b"{not json", 1)])
        await handler(uow, [inbound(tenant, kind="read")])  # another type on a notify subject: not ours
