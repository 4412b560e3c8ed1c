"""What every service process has: engine, broker, publisher, outbox relay, a watch on its durable
consumers, and an ASGI app with /healthz, /readyz and /metrics next to the FastStream subscribers.
Each service's app.py builds one `ServiceRuntime`, adds its subscribers, and hands `asgi()` to
uvicorn; tests call `start()` and `stop()`, which run the same steps."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from faststream import Context
from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.asgi.types import Scope
from faststream.nats import NatsBroker
from faststream.nats.message import NatsBatchMessage
from faststream.specification import AsyncAPI
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from prometheus_client import make_asgi_app
from pydantic import BaseModel, create_model
from sqlalchemy import Table, text
from sqlalchemy.ext.asyncio import AsyncEngine

from rapport.shared.contracts.envelope import CloudEvent
from rapport.shared.db.delivery import PublishedRows, forget_old_inbox
from rapport.shared.db.engine import create_engine, session_factory
from rapport.shared.durability import describe_durability
from rapport.shared.messaging.broker import batch_pull, bound_stream, consumer_config, make_broker, require_tls
from rapport.shared.messaging.consumer import BatchConsumer, Handler, Inbound, U, UnitOfWorkFactory, utcnow
from rapport.shared.messaging.publish import EventPublisher
from rapport.shared.messaging.relay import OutboxRelay
from rapport.shared.messaging.streams import ensure_streams
from rapport.shared.messaging.subjects import STREAM_SUBJECTS, stream_of
from rapport.shared.messaging.watch import ConsumerWatch, Subscription
from rapport.shared.metrics import REGISTRY, tenant_label
from rapport.shared.periodic import Periodic
from rapport.shared.settings import Settings

log = logging.getLogger("rapport.service")

VERSION = "0.1.0"


async def raw_bodies(msg: NatsBatchMessage, _original: Any) -> list[bytes]:
    """Skip FastStream's JSON decoding: services parse (and reject) bodies themselves."""
    return [m.data for m in msg.raw_message]


class Background(Protocol):
    def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class ServiceRuntime:
    name: str
    settings: Settings
    broker_url: str
    inbox: Table
    outbox: Table
    clock: Callable[[], datetime] = utcnow
    engine: AsyncEngine = field(init=False)
    broker: NatsBroker = field(init=False)
    publisher: EventPublisher = field(init=False)
    relay: OutboxRelay = field(init=False)

    def __post_init__(self) -> None:
        tenant_label.limit = self.settings.metrics_max_tenants
        self.engine = create_engine(
            self.settings.database_url_of(self.name), statement_timeout=self.settings.statement_timeout_seconds
        )
        self.sessions = session_factory(self.engine)
        self.broker = make_broker(self.settings, self.broker_url, service=self.name)
        self.publisher = EventPublisher(
            self.broker, service=self.name, timeout=self.settings.publish_timeout_seconds
        )
        self.published = PublishedRows()  # shared by this process's consumers and relay: one outbox
        self.relay = OutboxRelay(
            service=self.name, sessions=self.sessions, outbox=self.outbox, publisher=self.publisher,
            published=self.published, clock=self.clock, backoff=self.settings.retry_backoff_seconds,
        )
        self.inbox_pruning = Periodic(f"{self.name}-inbox-pruning", 3600, self.prune_inbox)
        self.subscriptions: list[Subscription] = []
        self.watch = ConsumerWatch(self.name, self.subscriptions, self.jetstream, self.settings)
        self.durability: dict[str, str] = {}
        self._background: list[Background] = [self.relay, self.inbox_pruning, self.watch]

    def jetstream(self) -> JetStreamContext:
        return self.broker.config.connection_state.stream  # type: ignore[no-any-return]

    def connection(self) -> Client | None:
        """The nats-py client, once connected (for the gateway's publish-and-wait, shared/messaging/ingress.py)."""
        return self.broker._connection

    def max_payload(self) -> int:
        connection = self.connection()
        return int(connection.max_payload) if connection is not None else 1024 * 1024

    async def prune_inbox(self) -> None:
        async with self.sessions() as session, session.begin():
            await forget_old_inbox(session, self.inbox, self.clock() - self.settings.inbox_retention)

    def consumer(self, subject: str, handler: Handler[U], unit_of_work: UnitOfWorkFactory[U],
                 passes_over: Callable[[Inbound], bool] | None = None) -> BatchConsumer[U]:
        return BatchConsumer(
            service=self.name, subject_pattern=subject, sessions=self.sessions, inbox=self.inbox,
            outbox=self.outbox, handler=handler, unit_of_work=unit_of_work, publisher=self.publisher,
            published=self.published, settings=self.settings, max_payload=self.max_payload, clock=self.clock,
            passes_over=passes_over,
        )

    def subscribe(self, subject: str, durable: str, handler: Handler[U], *, unit_of_work: UnitOfWorkFactory[U],
                  description: str, passes_over: Callable[[Inbound], bool] | None = None,
                  batch_wait_seconds: float | None = None) -> BatchConsumer[U]:
        """A durable pull consumer taking batches, acking by hand (see shared/messaging/consumer.py);
        `passes_over`: messages acked without a transaction, the handler having nothing to do with them;
        `batch_wait_seconds`: how long a batch waits to fill (RAPPORT_BATCH_WAIT_SECONDS when None),
        longer for what nobody waits on, so a trickle of messages is a few transactions, not one each."""
        consumer = self.consumer(subject, handler, unit_of_work, passes_over)
        stream = stream_of(subject)
        config = consumer_config(self.settings, durable, subject)

        @self.broker.subscriber(  # type: ignore[untyped-decorator]
            subject,
            stream=bound_stream(stream),
            durable=durable,
            pull_sub=batch_pull(self.settings, batch_wait_seconds),
            config=config,
            decoder=raw_bodies,
            description=description,
            title=f"{self.name}:{durable}",
        )
        async def on_batch(msg: NatsBatchMessage = Context("message")) -> None:  # noqa: B008 (FastStream DI)
            await consumer.consume(msg.raw_message)

        self.subscriptions.append(Subscription(stream=stream, config=config, consumer=consumer))
        return consumer

    def publishes(self, subject: str, data: type[BaseModel], *, description: str) -> None:
        """Declare an outbound event for the AsyncAPI document (publishing itself goes through the outbox)."""
        envelope = create_model(f"{data.__name__}Event", __base__=CloudEvent, data=(data, ...))
        self.broker.publisher(subject, schema=envelope, title=subject, description=description)

    # lifecycle: the same steps for the ASGI app (uvicorn) and for tests

    async def prepare(self) -> None:
        """Before the subscribers start: connect, make sure the streams are there, read the durability."""
        await self.broker.connect()
        require_tls(self.settings, self.broker._connection)  # type: ignore[arg-type]
        await ensure_streams(self.jetstream(), self.settings)
        self.durability = await describe_durability(self.settings, self.engine)

    async def start_background(self) -> None:
        for task in self._background:
            task.start()

    async def stop_background(self) -> None:
        for subscription in self.subscriptions:
            subscription.consumer.stop()
        for task in self._background:
            await task.stop()
        await self._let_go_of_an_unreachable_broker()

    async def _let_go_of_an_unreachable_broker(self) -> None:
        """Stopping drains the connection, and nats-py refuses to drain one that is reconnecting: it
        would stay reconnecting for ever (in a test, holding the event loop's end open). Closed here
        instead, before the broker's own stop, which then has nothing to drain."""
        client = self.connection()
        if client is not None and (client.is_reconnecting or client.is_connecting):
            await client.close()
            self.broker._connection = None

    async def start(self) -> None:
        await self.prepare()
        await self.broker.start()
        await self.start_background()

    async def stop(self) -> None:
        await self.stop_background()  # and lets go of an unreachable broker
        await self.broker.stop()
        await self.engine.dispose()

    def add_background(self, task: Background) -> None:
        self._background.append(task)

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        """Every check bounded by readiness_timeout_seconds: a silent dependency answers 'not ready'."""
        timeout = self.settings.readiness_timeout_seconds
        broker_ok, database_ok, streams = await asyncio.gather(
            _within(timeout, self._broker_answers()), _within(timeout, self._database_answers()),
            self._streams_answer(),
        )
        consumers = self.watch.states() if broker_ok else {s.durable: "unknown: the broker does not answer"
                                                            for s in self.subscriptions}
        ok = broker_ok and database_ok and all(state == "ok" for state in streams.values()) and \
            all(state == "consuming" for state in consumers.values())
        return ok, {"broker": broker_ok, "database": database_ok, "streams": streams, "consumers": consumers,
                    "durability": self.durability}

    async def _broker_answers(self) -> bool:
        return bool(await self.broker.ping(timeout=self.settings.readiness_timeout_seconds))

    async def _streams_answer(self) -> dict[str, str]:
        """Each stream Rapport uses (every service publishes events and dead letters; ingest and the
        gateway also use the inbound one): its leader answers. A connected client says nothing
        about that: a cluster that lost its quorum, or a server whose JetStream is off, takes
        connections and pings while no stream can store or deliver a message."""
        timeout = self.settings.readiness_timeout_seconds

        async def one(name: str) -> str:
            try:
                info = await asyncio.wait_for(self.jetstream().stream_info(name), timeout)
            except NotFoundError:
                return "missing: the stream does not exist (rapport broker init creates it)"
            except Exception as error:  # a timeout, no responders, JetStream unavailable, not connected
                return f"no answer: the stream has no leader or JetStream is unavailable ({type(error).__name__})"
            if info.cluster is not None and not info.cluster.leader:
                return "no leader"
            return "ok"
        names = list(STREAM_SUBJECTS)
        return dict(zip(names, await asyncio.gather(*(one(name) for name in names)), strict=True))

    async def _database_answers(self) -> bool:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True

    def asgi(self, *, background: Sequence[Background] = ()) -> AsgiFastStream:
        """`background` tasks start after the broker and stop before it (like the outbox relay)."""
        runtime = self
        for task in background:
            self.add_background(task)

        @get(include_in_schema=False)
        async def healthz(scope: Scope) -> AsgiResponse:
            return AsgiResponse(b'{"status":"alive"}', 200, headers={"content-type": "application/json"})

        @get(include_in_schema=False)
        async def readyz(scope: Scope) -> AsgiResponse:
            ok, checks = await runtime.ready()
            return AsgiResponse(json.dumps(checks).encode(), 200 if ok else 503,
                                headers={"content-type": "application/json"})

        async def dispose() -> None:
            await runtime.engine.dispose()

        return AsgiFastStream(
            self.broker,
            asgi_routes=[("/healthz", healthz), ("/readyz", readyz), ("/metrics", make_asgi_app(registry=REGISTRY))],
            specification=AsyncAPI(title=f"Rapport {self.name}", version=VERSION),
            on_startup=[self.prepare],
            after_startup=[self.start_background],
            on_shutdown=[self.stop_background],
            after_shutdown=[dispose],
            logger=logging.getLogger(f"rapport.{self.name}"),
        )


async def _within(seconds: float, check: Any) -> bool:
    """False after `seconds`, without waiting for the check to wind down: a cancelled database check
    closes its silent connection, which takes up to the statement timeout."""
    task = asyncio.ensure_future(check)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: nothing logged at exit
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        return False
    return not task.cancelled() and task.exception() is None and bool(task.result())
