"""What every service process has: engine, broker, publisher, outbox relay, and an ASGI app with
/healthz, /readyz and /metrics next to the FastStream subscribers. Each service's app.py builds one
`ServiceRuntime`, adds its subscribers, and hands `asgi()` to uvicorn."""

from __future__ import annotations

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
from prometheus_client import make_asgi_app
from pydantic import BaseModel, create_model
from sqlalchemy import Table, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.contracts.envelope import CloudEvent
from shared.db.delivery import INBOX_RETENTION, PublishedRows, forget_old_inbox
from shared.db.engine import create_engine, session_factory
from shared.messaging.broker import batch_pull, consumer_config, make_broker, rapport_stream
from shared.messaging.consumer import BatchConsumer, Work, utcnow
from shared.messaging.publish import EventPublisher
from shared.messaging.relay import OutboxRelay
from shared.metrics import REGISTRY
from shared.periodic import Periodic
from shared.settings import Settings

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
        self.engine = create_engine(self.settings.resolved_database_url())
        self.sessions = session_factory(self.engine)
        self.broker = make_broker(self.settings, self.broker_url, service=self.name)
        self.stream = rapport_stream()
        self.publisher = EventPublisher(
            self.broker, service=self.name, timeout=self.settings.publish_timeout_seconds
        )
        self.published = PublishedRows()  # shared by this process's consumers and relay: one outbox
        self.relay = OutboxRelay(
            service=self.name, sessions=self.sessions, outbox=self.outbox, publisher=self.publisher,
            published=self.published, clock=self.clock,
        )
        self.inbox_pruning = Periodic(f"{self.name}-inbox-pruning", 3600, self.prune_inbox)

    async def prune_inbox(self) -> None:
        async with self.sessions() as session, session.begin():
            await forget_old_inbox(session, self.inbox, self.clock() - INBOX_RETENTION)

    def consumer(self, subject: str, work: Work) -> BatchConsumer:
        return BatchConsumer(
            service=self.name, subject_pattern=subject, sessions=self.sessions, inbox=self.inbox,
            outbox=self.outbox, work=work, publisher=self.publisher, published=self.published,
            settings=self.settings, clock=self.clock,
        )

    def subscribe(self, subject: str, durable: str, work: Work, *, description: str) -> BatchConsumer:
        """A durable pull consumer taking batches, acking by hand (see shared/messaging/consumer.py)."""
        consumer = self.consumer(subject, work)

        @self.broker.subscriber(  # type: ignore[untyped-decorator]
            subject,
            stream=self.stream,
            durable=durable,
            pull_sub=batch_pull(self.settings),
            config=consumer_config(self.settings),
            decoder=raw_bodies,
            description=description,
            title=f"{self.name}:{durable}",
        )
        async def on_batch(msg: NatsBatchMessage = Context("message")) -> None:  # noqa: B008 (FastStream DI)
            await consumer.consume(msg.raw_message)

        return consumer

    def publishes(self, subject: str, data: type[BaseModel], *, description: str) -> None:
        """Declare an outbound event for the AsyncAPI document (publishing itself goes through the outbox)."""
        envelope = create_model(f"{data.__name__}Event", __base__=CloudEvent, data=(data, ...))
        self.broker.publisher(subject, schema=envelope, title=subject, description=description)

    async def ready(self) -> dict[str, bool]:
        broker_ok = await self.broker.ping(timeout=2.0)
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            database_ok = True
        except Exception:
            database_ok = False
        return {"broker": bool(broker_ok), "database": database_ok}

    def asgi(self, *, background: Sequence[Background] = ()) -> AsgiFastStream:
        """`background` tasks start after the broker and stop before it (like the outbox relay)."""
        runtime = self
        tasks: list[Background] = [self.relay, self.inbox_pruning, *background]

        @get(include_in_schema=False)
        async def healthz(scope: Scope) -> AsgiResponse:
            return AsgiResponse(b'{"status":"alive"}', 200, headers={"content-type": "application/json"})

        @get(include_in_schema=False)
        async def readyz(scope: Scope) -> AsgiResponse:
            checks = await runtime.ready()
            status = 200 if all(checks.values()) else 503
            return AsgiResponse(json.dumps(checks).encode(), status, headers={"content-type": "application/json"})

        async def start_tasks() -> None:
            for task in tasks:
                task.start()

        async def stop_tasks() -> None:
            for task in tasks:
                await task.stop()

        async def dispose() -> None:
            await runtime.engine.dispose()

        return AsgiFastStream(
            self.broker,
            asgi_routes=[("/healthz", healthz), ("/readyz", readyz), ("/metrics", make_asgi_app(registry=REGISTRY))],
            specification=AsyncAPI(title=f"Rapport {self.name}", version=VERSION),
            after_startup=[start_tasks],
            on_shutdown=[stop_tasks],
            after_shutdown=[dispose],
            logger=logging.getLogger(f"rapport.{self.name}"),
        )
