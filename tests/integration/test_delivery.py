"""Delivery guarantees of the consumer every service uses, on the real NATS JetStream and a real
database (SQLite and PostgreSQL): idempotent under redelivery, retried with backoff while the
database is down, dead-lettered with its error when it stays down or is poison, and nothing lost
when the process dies between commit and publish."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

import nats
import pytest
from harness import running, settings_for
from nats.aio.msg import Msg
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest.models import inbox, outbox
from shared.db.delivery import INBOX_RETENTION, Outgoing
from shared.messaging import subjects
from shared.messaging.consumer import Inbound
from shared.service import ServiceRuntime

pytestmark = pytest.mark.nats


class Echo:
    """A work function that answers each message with one event, and can be told to fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.failures: list[Exception] = []

    async def __call__(self, session: AsyncSession, messages: Sequence[Inbound], now: datetime) -> list[Outgoing]:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        await session.execute(text("SELECT 1"))
        return [
            Outgoing(event_id=m.event_id("echo"), subject=subjects.outbound(m.tenant, "echo", "done"), body=m.body)
            for m in messages
        ]


class Listener:
    def __init__(self) -> None:
        self.messages: list[Msg] = []
        self.arrived = asyncio.Condition()

    async def on_message(self, msg: Msg) -> None:
        async with self.arrived:
            self.messages.append(msg)
            self.arrived.notify_all()

    async def wait_for(self, count: int, seconds: float = 20) -> list[Msg]:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.messages) >= count), seconds)
        return self.messages


@asynccontextmanager
async def echo_service(
    database_url: str, nats_url: str, work: Echo, **settings: object
) -> AsyncIterator[ServiceRuntime]:
    runtime = ServiceRuntime("ingest", settings_for(database_url, **settings), nats_url, inbox=inbox, outbox=outbox)
    runtime.subscribe(subjects.INBOUND_SUBMISSIONS, "echo-v1", work, description="test echo")
    await runtime.broker.start()
    try:
        yield runtime
    finally:
        await runtime.relay.stop()
        await runtime.broker.stop()
        await runtime.engine.dispose()


@asynccontextmanager
async def listening(nats_url: str, subject: str) -> AsyncIterator[tuple[Listener, nats.aio.client.Client]]:
    client = await nats.connect(nats_url)
    listener = Listener()
    await client.subscribe(subject, cb=listener.on_message)
    await client.flush()
    try:
        yield listener, client
    finally:
        await client.close()


async def count_rows(runtime: ServiceRuntime, table: object) -> int:
    async with runtime.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


async def test_a_message_published_twice_with_one_id_gives_one_event(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    work = Echo()
    async with echo_service(database_url, fresh_stream, work), \
            listening(fresh_stream, f"rapport.{tenant}.echo.done") as (listener, client):
        js = client.jetstream()
        first = await js.publish(subjects.submissions_in(tenant), b"{}", headers={"Nats-Msg-Id": "same"})
        second = await js.publish(subjects.submissions_in(tenant), b"{}", headers={"Nats-Msg-Id": "same"})
        marker = await js.publish(subjects.submissions_in(tenant), b"{}", headers={"Nats-Msg-Id": "marker"})
        assert not first.duplicate and second.duplicate and not marker.duplicate
        events = await listener.wait_for(2)
        assert sorted(json.loads(m.data) == {} for m in events) == [True, True]
        assert len(events) == 2


async def test_a_redelivered_message_is_recognised_by_the_inbox_and_changes_nothing(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    work = Echo()
    async with echo_service(database_url, fresh_stream, work, ack_wait_seconds=1.0) as runtime, \
            listening(fresh_stream, f"rapport.{tenant}.echo.done") as (listener, client):
        acks: list[int] = []
        acked_again = asyncio.Event()
        original_ack = Msg.ack

        async def die_before_first_ack(msg: Msg) -> None:
            acks.append(msg.metadata.num_delivered)
            if len(acks) > 1:  # the process "died" after committing, before acking, the first time
                await original_ack(msg)
                acked_again.set()

        Msg.ack = die_before_first_ack  # type: ignore[method-assign]
        try:
            await client.jetstream().publish(subjects.submissions_in(tenant), b"{}", headers={"Nats-Msg-Id": "m-1"})
            await listener.wait_for(1)
            await asyncio.wait_for(acked_again.wait(), 20)  # JetStream redelivers after ack_wait
        finally:
            Msg.ack = original_ack  # type: ignore[method-assign]
        assert acks == [1, 2]
        assert work.calls == 1, "the redelivery did no work a second time"
        assert len(listener.messages) == 1
        assert await count_rows(runtime, inbox) == 1


async def test_poison_goes_to_the_dead_letter_subject_on_first_sight_with_its_error(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    work = Echo()
    work.failures.append(ValueError("cannot use this"))
    async with echo_service(database_url, fresh_stream, work), \
            listening(fresh_stream, subjects.dead_letter(tenant, "ingest")) as (listener, client):
        await client.jetstream().publish(subjects.submissions_in(tenant), b'{"x": 1}', headers={"Nats-Msg-Id": "p-1"})
        [letter] = await listener.wait_for(1)
        assert letter.data == b'{"x": 1}', "the dead letter keeps the original message"
        assert letter.headers is not None
        assert letter.headers["Rapport-Error"] == "poison: ValueError"
        assert letter.headers["Rapport-Original-Subject"] == subjects.submissions_in(tenant)
        assert letter.headers["Rapport-Deliveries"] == "1"


async def test_a_transient_fault_is_retried_with_backoff_and_then_processed(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    work = Echo()
    work.failures += [OperationalError("SELECT 1", {}, ConnectionRefusedError()) for _ in range(2)]
    async with echo_service(database_url, fresh_stream, work), \
            listening(fresh_stream, f"rapport.{tenant}.echo.done") as (listener, client):
        await client.jetstream().publish(subjects.submissions_in(tenant), b"{}", headers={"Nats-Msg-Id": "t-1"})
        await listener.wait_for(1)
        assert work.calls == 3
        assert len(listener.messages) == 1


async def test_a_fault_that_outlasts_max_deliver_is_dead_lettered_not_dropped(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    work = Echo()
    work.failures += [OperationalError("SELECT 1", {}, ConnectionRefusedError()) for _ in range(10)]
    async with echo_service(database_url, fresh_stream, work, max_deliver=3), \
            listening(fresh_stream, subjects.dead_letter(tenant, "ingest")) as (listener, client):
        await client.jetstream().publish(subjects.submissions_in(tenant), b"{}", headers={"Nats-Msg-Id": "t-2"})
        [letter] = await listener.wait_for(1)
        assert letter.headers is not None
        assert letter.headers["Rapport-Error"] == "gave up after 3 deliveries: OperationalError"
        assert work.calls == 3


async def test_a_crash_between_commit_and_publish_loses_nothing(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    work = Echo()
    async with echo_service(database_url, fresh_stream, work) as runtime, \
            listening(fresh_stream, f"rapport.{tenant}.echo.done") as (listener, _client):
        async def broker_unreachable(events: Sequence[Outgoing]) -> list[str]:
            return []  # the fast path published nothing: as if the process died right after commit

        real_publish_all = runtime.publisher.publish_all
        runtime.publisher.publish_all = broker_unreachable  # type: ignore[method-assign]
        consumer = runtime.consumer(subjects.INBOUND_SUBMISSIONS, work)
        await consumer.handle([Inbound("c-1", subjects.submissions_in(tenant), tenant, b"{}", 1)])
        assert await count_rows(runtime, outbox) == 1, "the event waits in the outbox"
        runtime.publisher.publish_all = real_publish_all  # type: ignore[method-assign]
        assert await runtime.relay.relay_once(grace=datetime.resolution * 0) == 1
        await listener.wait_for(1)
        assert await count_rows(runtime, outbox) == 0
        assert await runtime.relay.relay_once() == 0


async def test_published_rows_are_cleared_by_the_next_batch_or_the_relay_and_never_republished(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    work = Echo()
    async with echo_service(database_url, fresh_stream, work) as runtime, \
            listening(fresh_stream, f"rapport.{tenant}.echo.done") as (listener, _client):
        consumer = runtime.consumer(subjects.INBOUND_SUBMISSIONS, work)
        await consumer.handle([Inbound("p-1", subjects.submissions_in(tenant), tenant, b"{}", 1)])
        await listener.wait_for(1)
        assert await count_rows(runtime, outbox) == 1, "published; its row goes with the next transaction"
        await consumer.handle([Inbound("p-2", subjects.submissions_in(tenant), tenant, b"{}", 1)])
        await listener.wait_for(2)
        assert await count_rows(runtime, outbox) == 1, "the first row went with the second batch"
        assert await runtime.relay.relay_once(grace=datetime.resolution * 0) == 0, "nothing republished"
        assert await count_rows(runtime, outbox) == 0
        assert len(listener.messages) == 2


@pytest.mark.postgres
async def test_postgres_down_then_back_the_message_is_processed_once(
    postgres_databases: object, fresh_stream: str, tenant: str
) -> None:
    database_url = await postgres_databases.postgres()  # type: ignore[attr-defined]
    name = database_url.rsplit("/", 1)[1]
    admin_url = database_url.rsplit("/", 1)[0].replace("postgresql+asyncpg://", "postgresql://") + "/postgres"
    import asyncpg

    admin = await asyncpg.connect(admin_url)
    work = Echo()
    try:
        async with echo_service(database_url, fresh_stream, work, max_deliver=20) as runtime, \
                listening(fresh_stream, f"rapport.{tenant}.echo.done") as (listener, client):
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await admin.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
            retried = asyncio.Event()
            original_nak = Msg.nak

            async def nak_and_tell(msg: Msg, delay: float | None = None) -> None:
                await original_nak(msg, delay=delay)
                retried.set()

            Msg.nak = nak_and_tell  # type: ignore[method-assign]
            try:
                await client.jetstream().publish(
                    subjects.submissions_in(tenant), b"{}", headers={"Nats-Msg-Id": "d-1"}
                )
                await asyncio.wait_for(retried.wait(), 20)  # the database refused: nak'ed for a retry
            finally:
                Msg.nak = original_nak  # type: ignore[method-assign]
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await listener.wait_for(1, seconds=30)
            assert len(listener.messages) == 1
            assert await count_rows(runtime, inbox) == 1
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()


async def test_a_submission_on_a_subject_naming_no_valid_tenant_is_dead_lettered_with_the_reason(
    database_url: str, fresh_stream: str
) -> None:
    async with running(["ingest"], settings_for(database_url), fresh_stream), \
            listening(fresh_stream, subjects.dead_letter("unknown", "ingest")) as (listener, client):
        await client.jetstream().publish("rapport.NotATenant.in.submissions", b"{}", headers={"Nats-Msg-Id": "u-1"})
        [letter] = await listener.wait_for(1)
        assert letter.headers is not None
        assert letter.headers["Rapport-Error"] == "poison: UnroutableSubmission"
        assert letter.headers["Rapport-Original-Subject"] == "rapport.NotATenant.in.submissions"


async def test_inbox_rows_older_than_the_retention_are_pruned(database_url: str, fresh_stream: str) -> None:
    async with echo_service(database_url, fresh_stream, Echo()) as runtime:
        old, recent = runtime.clock() - INBOX_RETENTION * 2, runtime.clock()
        async with runtime.sessions() as session, session.begin():
            await session.execute(inbox.insert(), [{"message_id": "old", "received_at": old},
                                                   {"message_id": "recent", "received_at": recent}])
        await runtime.prune_inbox()
        async with runtime.sessions() as session:
            kept = set((await session.execute(select(inbox.c.message_id))).scalars())
        assert kept == {"recent"}
