"""The bare pipeline `rapport bench --baseline` measures Rapport against, in the same run, on the
same broker and database (so the same fsync policy).

Three hops, each its own process as Rapport's services are: take a batch from a durable pull
consumer, insert it in one statement, commit, publish each message to the next hop with the
stream's acknowledgement, ack the batch. No parsing, scoring, rules, inbox or outbox: what any
correct three-hop FastStream pipeline must pay at least. Its stream and tables are its own
(`RAPPORT_BASELINE`, `rapport_baseline_hop<n>`) and are removed after the run.

Run one hop: `python -m rapport.baseline <hop> <run>` with RAPPORT_BROKER_URL and RAPPORT_DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Any

from faststream import Context
from faststream.nats import JStream
from faststream.nats.message import NatsBatchMessage
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError
from sqlalchemy import Column, LargeBinary, MetaData, String, Table
from sqlalchemy.ext.asyncio import AsyncEngine

from rapport.shared.db.engine import create_engine
from rapport.shared.messaging.broker import batch_pull, consumer_config, make_broker
from rapport.shared.settings import Settings

STREAM = "RAPPORT_BASELINE"
PREFIX = "rapport-baseline"  # not `rapport.`: it never shares a stream or consumer with Rapport
HOPS = 3
KEY = "Baseline-Key"  # one message's key through every hop; each hop's publish has its own Nats-Msg-Id


def subject(run: str, hop: int) -> str:
    """hop 0 is where the load is published, hop 3 the last event."""
    return f"{PREFIX}.{run}.hop{hop}"


def service(hop: int) -> str:
    """A hop's name where a service's would be (its database: Settings.database_url_of)."""
    return f"baseline-{hop}"


def table(hop: int, metadata: MetaData | None = None) -> Table:
    return Table(f"rapport_baseline_hop{hop}", metadata or MetaData(),
                 Column("message_id", String(64), primary_key=True), Column("body", LargeBinary, nullable=False))


async def prepare(js: JetStreamContext, engines: list[AsyncEngine]) -> None:
    """`engines`: one per hop, hop 1's first."""
    await remove(js, engines)
    await js.add_stream(StreamConfig(name=STREAM, subjects=[f"{PREFIX}.>"], storage=StorageType.FILE,
                                     duplicate_window=300))
    for hop, engine in enumerate(engines, start=1):
        metadata = MetaData()
        table(hop, metadata)
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)


async def remove(js: JetStreamContext, engines: list[AsyncEngine]) -> None:
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(STREAM)
    for hop, engine in enumerate(engines, start=1):
        metadata = MetaData()
        table(hop, metadata)
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)


async def raw_batch(msg: NatsBatchMessage, _original: Any) -> list[bytes]:
    return [m.data for m in msg.raw_message]


async def serve_hop(hop: int, run: str, settings: Settings) -> None:
    assert settings.broker_url is not None
    broker = make_broker(settings, settings.broker_url, service=service(hop))
    engine = create_engine(settings.database_url_of(service(hop)))
    rows = table(hop)
    durable = f"baseline-{run}-{hop}"

    @broker.subscriber(  # type: ignore[untyped-decorator]
        subject(run, hop - 1), stream=JStream(STREAM, declare=False), durable=durable,
        pull_sub=batch_pull(settings), config=consumer_config(settings, durable, subject(run, hop - 1)),
        decoder=raw_batch,
    )
    async def on_batch(msg: NatsBatchMessage = Context("message")) -> None:  # noqa: B008 (FastStream DI)
        batch = msg.raw_message
        keys = [(m.headers or {}).get(KEY, "") for m in batch]
        async with engine.begin() as conn:
            await conn.execute(rows.insert(), [{"message_id": k, "body": m.data} for k, m in zip(keys, batch,
                                                                                                 strict=True)])
        await asyncio.gather(*(broker.publish(m.data, subject(run, hop), stream=STREAM,
                                              headers={"Nats-Msg-Id": f"{k}.{hop}", KEY: k},
                                              timeout=settings.publish_timeout_seconds)
                               for k, m in zip(keys, batch, strict=True)))
        for m in batch:
            await m.ack()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await broker.start()
    print("ready", flush=True)
    await stop.wait()
    await broker.stop()
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(serve_hop(int(sys.argv[1]), sys.argv[2], Settings()))
