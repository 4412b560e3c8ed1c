"""Delivery guarantees of the consumer every service uses, on the real NATS JetStream and a real
database (SQLite and PostgreSQL): idempotent under redelivery, per tenant; paused and retried in
place while a dependency is away, never dead-lettered for it; poison dead-lettered on first sight
and defects after a few deliveries, with their reason; nothing lost when the process dies between
commit and publish, and no outbox row that the broker refuses holding the others back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta

import nats
import pytest
from harness import running, settings_for, until
from nats.aio.msg import Msg
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from rapport.services.ingest.models import inbox, outbox
from rapport.shared.db.delivery import Outgoing, add_to_outbox
from rapport.shared.messaging import subjects
from rapport.shared.messaging.consumer import BatchConsumer, Inbound
from rapport.shared.messaging.relay import OutboxRelay
from rapport.shared.messaging.retry import PoisonMessage
from rapport.shared.service import ServiceRuntime
from rapport.shared.unit_of_work import SessionUnitOfWork

pytestmark = pytest.mark.nats


class Echo:
    """A work function that answers each message with one event, and can be told to fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.failures: list[Exception] = []

    async def __call__(self, uow: SessionUnitOfWork, messages: Sequence[Inbound]) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        await uow.session.execute(text("SELECT 1"))
        uow.publish(
            Outgoing(event_id=m.event_id("echo"), subject=subjects.outbound(m.tenant, "submission", "echoed"),
                     body=m.body)
            for m in messages
        )


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
    database_url: str, nats_url: str, work: Echo, passes_over: Callable[[Inbound], bool] | None = None,
    **settings: object
) -> AsyncIterator[ServiceRuntime]:
    runtime = ServiceRuntime("ingest", settings_for(database_url, **settings), nats_url, inbox=inbox, outbox=outbox)
    runtime.subscribe(subjects.INBOUND_SUBMISSIONS, "echo-v1", work, unit_of_work=SessionUnitOfWork,
                      description="test echo", passes_over=passes_over)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


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


def echoed(tenant: str) -> str:
    return subjects.outbound(tenant, "submission", "echoed")


class Paused:
    """Tells a test when a consumer has paused for a transient fault (an event, not a sleep)."""

    def __init__(self, consumer: BatchConsumer) -> None:
        self.seen = asyncio.Event()
        original = consumer._pause

        def pause_and_tell(error: Exception, attempt: int, count: int) -> None:
            original(error, attempt, count)
            self.seen.set()

        consumer._pause = pause_and_tell  # type: ignore[method-assign]


async def test_a_message_published_twice_with_one_id_gives_one_event(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    work = Echo()
    async with echo_service(database_url, fresh_stream, work) as runtime, \
            listening(fresh_stream, echoed(tenant)) as (listener, client):
        js = client.jetstream()
        for _ in range(2):  # caught by the stream's short window or, after it, by the inbox
            await js.publish(subjects.submissions_in(tenant), b"{}", headers={"Nats-Msg-Id": "same"})
        await js.publish(subjects.submissions_in(tenant), b'{"marker": 1}', headers={"Nats-Msg-Id": "marker"})
        events = await listener.wait_for(2)
        assert sorted(m.data for m in events) == [b'{"marker": 1}', b"{}"]
        assert len(events) == 2
        assert await count_rows(runtime, inbox) == 2


async def test_a_message_the_handler_would_pass_over_is_acked_without_a_transaction_or_an_inbox_row(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    work = Echo()
    async with echo_service(database_url, fresh_stream, work, passes_over=lambda m: b"nothing to do" in m.body) \
            as runtime, listening(fresh_stream, echoed(tenant)) as (listener, client):
        js = client.jetstream()
        for n in range(3):
            await js.publish(subjects.submissions_in(tenant), b'{"note": "nothing to do"}',
                             headers={"Nats-Msg-Id": f"passed-{n}"})
        await js.publish(subjects.submissions_in(tenant), b'{"marker": 1}', headers={"Nats-Msg-Id": "marker"})
        assert [m.data for m in await listener.wait_for(1)] == [b'{"marker": 1}']
        assert await count_rows(runtime, inbox) == 1  # the marker's only
        stream = subjects.stream_of(subjects.INBOUND_SUBMISSIONS)

        async def all_acked() -> bool:
            info = await js.consumer_info(stream, "echo-v1")
            return info.num_pending == 0 and info.num_ack_pending == 0

        assert await until(all_acked)  # none of the passed-over messages comes back
        assert len(listener.messages) == 1


async def test_one_tenant_reusing_another_tenants_message_id_is_still_answered(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    """The inbox remembers a message id per tenant: B's id taken by A (later, or first) is A's own."""
    other = tenant + "-b"
    work = Echo()
    async with echo_service(database_url, fresh_stream, work) as runtime, \
            listening(fresh_stream, "rapport.*.submission.echoed") as (listener, client):
        js = client.jetstream()
        await js.publish(subjects.submissions_in(other), b'{"who": "b"}', headers={"Nats-Msg-Id": "order-1"})
        await listener.wait_for(1)
        await asyncio.sleep(0.2)  # the scenario: the id reused after the inbound stream's 100 ms window
        await js.publish(subjects.submissions_in(tenant), b'{"who": "a"}', headers={"Nats-Msg-Id": "order-1"})
        events = await listener.wait_for(2)
        assert sorted(m.subject for m in events) == sorted([echoed(other), echoed(tenant)])
        assert await count_rows(runtime, inbox) == 2


async def test_a_client_cannot_take_an_internal_event_id_from_its_own_subject(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    """Inbound messages and the services' events live in different streams, so a client that sends
    the id of another tenant's next event on its own subject takes nothing from that tenant."""
    other = tenant + "-b"
    work = Echo()
    async with echo_service(database_url, fresh_stream, work), \
            listening(fresh_stream, echoed(other)) as (listener, client):
        js = client.jetstream()
        victim = Inbound("v-1", subjects.submissions_in(other), other, b"{}", 1)
        forged = await js.publish(subjects.submissions_in(tenant), b"{}",
                                  headers={"Nats-Msg-Id": victim.event_id("echo")})
        assert forged.stream == subjects.INBOUND_STREAM
        await js.publish(subjects.submissions_in(other), b"{}", headers={"Nats-Msg-Id": "v-1"})
        [event] = await listener.wait_for(1)
        assert event.headers is not None and event.headers["Nats-Msg-Id"] == victim.event_id("echo")


async def test_a_redelivered_message_is_recognised_by_the_inbox_and_changes_nothing(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    work = Echo()
    async with echo_service(database_url, fresh_stream, work, ack_wait_seconds=1.0) as runtime, \
            listening(fresh_stream, echoed(tenant)) as (listener, client):
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


async def test_poison_goes_to_the_dead_letter_stream_on_first_sight_with_its_reason(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    work = Echo()
    work.failures.append(PoisonMessage("tenant_mismatch: another tenant"))
    async with echo_service(database_url, fresh_stream, work), \
            listening(fresh_stream, subjects.dead_letter(tenant, "ingest")) as (listener, client):
        await client.jetstream().publish(subjects.submissions_in(tenant), b'{"x": 1}', headers={"Nats-Msg-Id": "p-1"})
        [letter] = await listener.wait_for(1)
        assert letter.data == b'{"x": 1}', "the dead letter keeps the original message"
        assert letter.headers is not None
        assert letter.headers["Rapport-Error"] == "poison: tenant_mismatch: another tenant"
        assert letter.headers["Rapport-Original-Subject"] == subjects.submissions_in(tenant)
        assert letter.headers["Rapport-Original-Message-Id"] == "p-1"
        assert letter.headers["Rapport-Deliveries"] == "1"
        assert work.calls == 1


async def test_a_defect_is_retried_then_dead_lettered_as_a_defect(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    work = Echo()
    work.failures += [KeyError("a bug") for _ in range(10)]
    async with echo_service(database_url, fresh_stream, work, max_deliver=3), \
            listening(fresh_stream, subjects.dead_letter(tenant, "ingest")) as (listener, client):
        await client.jetstream().publish(subjects.submissions_in(tenant), b"{}", headers={"Nats-Msg-Id": "k-1"})
        [letter] = await listener.wait_for(1)
        assert letter.headers is not None
        assert letter.headers["Rapport-Error"] == "defect: KeyError after 3 deliveries"
        assert work.calls == 3


async def test_a_transient_fault_pauses_the_batch_in_place_until_it_passes(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    work = Echo()
    work.failures += [OperationalError("SELECT 1", {}, ConnectionRefusedError()) for _ in range(2)]
    nak = Counted(Msg.nak)
    async with echo_service(database_url, fresh_stream, work) as runtime, \
            listening(fresh_stream, echoed(tenant)) as (listener, client):
        paused = Paused(runtime.subscriptions[0].consumer)
        with nak.patched():
            await client.jetstream().publish(subjects.submissions_in(tenant), b"{}", headers={"Nats-Msg-Id": "t-1"})
            await asyncio.wait_for(paused.seen.wait(), 20)
            await listener.wait_for(1)
        assert work.calls == 3
        assert len(listener.messages) == 1
        assert nak.calls == 0, "the batch was held and retried in place, not handed back"
        assert runtime.subscriptions[0].consumer.paused is None


async def test_a_transient_fault_longer_than_max_deliver_is_never_dead_lettered(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    work = Echo()
    work.failures += [OperationalError("SELECT 1", {}, ConnectionRefusedError()) for _ in range(12)]
    async with echo_service(database_url, fresh_stream, work, max_deliver=3, retry_backoff_seconds=[0.05]), \
            listening(fresh_stream, echoed(tenant)) as (listener, client), \
            listening(fresh_stream, subjects.dead_letter(tenant, "ingest")) as (letters, _):
        await client.jetstream().publish(subjects.submissions_in(tenant), b"{}", headers={"Nats-Msg-Id": "t-2"})
        await listener.wait_for(1)
        assert work.calls == 13
        assert letters.messages == []


async def test_an_event_over_the_brokers_limit_is_a_defect_not_an_outbox_row(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    class Huge(Echo):
        async def __call__(self, uow: SessionUnitOfWork, messages: Sequence[Inbound]) -> None:
            self.calls += 1
            uow.publish(Outgoing(m.event_id("echo"), echoed(m.tenant), b"x" * 2_000_000) for m in messages)

    work = Huge()
    async with echo_service(database_url, fresh_stream, work, max_deliver=2, retry_backoff_seconds=[0.05]) \
            as runtime, listening(fresh_stream, subjects.dead_letter(tenant, "ingest")) as (listener, client):
        await client.jetstream().publish(subjects.submissions_in(tenant), b"{}", headers={"Nats-Msg-Id": "h-1"})
        [letter] = await listener.wait_for(1)
        assert letter.headers is not None
        assert letter.headers["Rapport-Error"] == "defect: EventTooLarge after 2 deliveries"
        assert "2000000 bytes" in letter.headers["Rapport-Error-Detail"]
        assert await count_rows(runtime, outbox) == 0


async def test_a_crash_between_commit_and_publish_loses_nothing(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    work = Echo()
    async with echo_service(database_url, fresh_stream, work) as runtime, \
            listening(fresh_stream, echoed(tenant)) as (listener, _client):
        async def broker_unreachable(events: Sequence[Outgoing]) -> list[str]:
            return []  # the fast path published nothing: as if the process died right after commit

        real_publish_all = runtime.publisher.publish_all
        runtime.publisher.publish_all = broker_unreachable  # type: ignore[method-assign]
        consumer = runtime.consumer(subjects.INBOUND_SUBMISSIONS, work, SessionUnitOfWork)
        await consumer.handle([Inbound("c-1", subjects.submissions_in(tenant), tenant, b"{}", 1)])
        assert await count_rows(runtime, outbox) == 1, "the event waits in the outbox"
        assert await runtime.relay.relay_once() == 0, "the fast path's head start is respected"
        runtime.publisher.publish_all = real_publish_all  # type: ignore[method-assign]
        assert await runtime.relay.relay_once(ahead=consumer.RELAY_AFTER) == 1
        await listener.wait_for(1)
        assert await count_rows(runtime, outbox) == 0
        assert await runtime.relay.relay_once(ahead=consumer.RELAY_AFTER) == 0


async def test_outbox_rows_the_broker_refuses_wait_and_never_hold_the_others_back(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    work = Echo()
    async with echo_service(database_url, fresh_stream, work) as runtime, \
            listening(fresh_stream, echoed(tenant)) as (listener, _client):
        stuck = [Outgoing(f"stuck-{n}", "rapport.nowhere.stuck", b"{}") for n in range(3)]  # no stream takes these
        async with runtime.sessions() as session, session.begin():
            await add_to_outbox(session, outbox, stuck, runtime.clock(), timedelta(0))
        consumer = runtime.consumer(subjects.INBOUND_SUBMISSIONS, work, SessionUnitOfWork)
        runtime.publisher.publish_all = _nothing  # type: ignore[method-assign]
        await consumer.handle([Inbound("ok-1", subjects.submissions_in(tenant), tenant, b"{}", 1)])
        del runtime.publisher.publish_all
        relay = OutboxRelay(service="ingest", sessions=runtime.sessions, outbox=outbox, publisher=runtime.publisher,
                            published=runtime.published, clock=runtime.clock, backoff=[60.0], batch=3)
        assert await relay.relay_once() == 0, "the refused rows were tried first and now wait"
        assert await relay.relay_once(ahead=consumer.RELAY_AFTER) == 1, "so the good row is relayed"
        await listener.wait_for(1)
        async with runtime.sessions() as session:
            waiting = (await session.execute(select(outbox.c.event_id, outbox.c.attempts))).all()
        assert sorted(waiting) == [(f"stuck-{n}", 1) for n in range(3)]


async def _nothing(events: Sequence[Outgoing]) -> list[str]:
    return []


async def test_published_rows_are_cleared_by_the_next_batch_or_the_relay_and_never_republished(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    work = Echo()
    async with echo_service(database_url, fresh_stream, work) as runtime, \
            listening(fresh_stream, echoed(tenant)) as (listener, _client):
        consumer = runtime.consumer(subjects.INBOUND_SUBMISSIONS, work, SessionUnitOfWork)
        await consumer.handle([Inbound("p-1", subjects.submissions_in(tenant), tenant, b"{}", 1)])
        await listener.wait_for(1)
        assert await count_rows(runtime, outbox) == 1, "published; its row goes with the next transaction"
        await consumer.handle([Inbound("p-2", subjects.submissions_in(tenant), tenant, b"{}", 1)])
        await listener.wait_for(2)
        assert await count_rows(runtime, outbox) == 1, "the first row went with the second batch"
        assert await runtime.relay.relay_once(ahead=consumer.RELAY_AFTER) == 0, "nothing republished"
        assert await count_rows(runtime, outbox) == 0
        assert len(listener.messages) == 2


@pytest.mark.postgres
async def test_postgres_refusing_connections_pauses_consumption_then_the_message_is_processed_once(
    postgres_databases: object, fresh_stream: str, tenant: str
) -> None:
    database_url = await postgres_databases.postgres()  # type: ignore[attr-defined]
    name = database_url.rsplit("/", 1)[1]
    admin_url = database_url.rsplit("/", 1)[0].replace("postgresql+asyncpg://", "postgresql://") + "/postgres"
    import asyncpg

    admin = await asyncpg.connect(admin_url)
    work = Echo()
    try:
        async with echo_service(database_url, fresh_stream, work) as runtime, \
                listening(fresh_stream, echoed(tenant)) as (listener, client):
            paused = Paused(runtime.subscriptions[0].consumer)
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await admin.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
            await client.jetstream().publish(subjects.submissions_in(tenant), b"{}", headers={"Nats-Msg-Id": "d-1"})
            await asyncio.wait_for(paused.seen.wait(), 20)
            ready, checks = await runtime.ready()
            assert not ready and not checks["database"]
            assert checks["consumers"]["echo-v1"].startswith("paused: ")
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await listener.wait_for(1, seconds=30)
            assert len(listener.messages) == 1
            assert await count_rows(runtime, inbox) == 1
            ready, checks = await runtime.ready()
            assert ready, checks
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()


async def test_a_submission_on_a_subject_naming_no_valid_tenant_is_dead_lettered_with_the_reason(
    database_url: str, fresh_stream: str
) -> None:
    async with running(["ingest"], settings_for(database_url), fresh_stream), \
            listening(fresh_stream, subjects.dead_letter(subjects.UNROUTABLE, "ingest")) as (listener, client):
        await client.jetstream().publish("rapport.NotATenant.in.submissions", b"{}", headers={"Nats-Msg-Id": "u-1"})
        [letter] = await listener.wait_for(1)
        assert letter.headers is not None
        assert letter.headers["Rapport-Error"] == "poison: the subject does not name a valid tenant"
        assert letter.headers["Rapport-Original-Subject"] == "rapport.NotATenant.in.submissions"


async def test_inbox_rows_older_than_the_retention_are_pruned(database_url: str, fresh_stream: str) -> None:
    async with echo_service(database_url, fresh_stream, Echo()) as runtime:
        retention = runtime.settings.inbox_retention
        old, recent = runtime.clock() - retention * 2, runtime.clock()
        async with runtime.sessions() as session, session.begin():
            await session.execute(inbox.insert(), [{"message_key": "old", "received_at": old},
                                                   {"message_key": "recent", "received_at": recent}])
        await runtime.prune_inbox()
        async with runtime.sessions() as session:
            kept = set((await session.execute(select(inbox.c.message_key))).scalars())
        assert kept == {"recent"}


async def test_a_deleted_durable_consumer_is_noticed_and_created_again_where_it_left_off(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    work = Echo()
    async with echo_service(database_url, fresh_stream, work) as runtime, \
            listening(fresh_stream, echoed(tenant)) as (listener, client):
        js = client.jetstream()
        await js.publish(subjects.submissions_in(tenant), b'{"n": 1}', headers={"Nats-Msg-Id": "w-1"})
        await listener.wait_for(1)
        await runtime.watch.check_once()
        await js.delete_consumer(subjects.INBOUND_STREAM, "echo-v1")
        await runtime.watch.check_once()  # finds it missing and creates it again
        info = await js.consumer_info(subjects.INBOUND_STREAM, "echo-v1")
        assert info.config.max_deliver == -1 and info.config.filter_subject == subjects.INBOUND_SUBMISSIONS
        await js.publish(subjects.submissions_in(tenant), b'{"n": 2}', headers={"Nats-Msg-Id": "w-2"})
        events = await listener.wait_for(2)
        assert [json.loads(m.data) for m in events] == [{"n": 1}, {"n": 2}]
        assert work.calls == 2, "nothing done twice"
        ready, checks = await runtime.ready()
        assert ready and checks["consumers"] == {"echo-v1": "consuming"}


class Counted:
    """Counts calls of a Msg method while patched."""

    def __init__(self, method: Callable[..., Awaitable[None]]) -> None:
        self.method = method
        self.calls = 0

    @contextmanager
    def patched(self) -> Iterator[None]:
        original = self.method
        name = original.__name__

        async def counting(msg: Msg, *args: object, **kwargs: object) -> None:
            self.calls += 1
            await original(msg, *args, **kwargs)

        setattr(Msg, name, counting)
        try:
            yield
        finally:
            setattr(Msg, name, original)
