"""Clients that ride out a broker outage (issue 16 item 3): `rapport submit` and the other shipped
clients send a submission again with the same message id until the stream takes it, and say plainly
when the deadline passed and it is unknown whether it was stored. A nats-server of the test's own,
killed and started again on the same port and store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from rapport.embedded_nats import EmbeddedNats, free_port
from rapport.journeys import Journeys
from rapport.shared.messaging import subjects
from rapport.shared.messaging.resend import StoreUnknown
from rapport.shared.messaging.streams import ensure_streams
from rapport.shared.settings import Settings

pytestmark = pytest.mark.nats
TENANT = "resend"


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path, port=free_port())
    server.start()
    client = await nats.connect(server.url)
    await ensure_streams(client.jetstream(), Settings())
    await client.close()
    try:
        yield server
    finally:
        server.stop()


def kill(server: EmbeddedNats) -> None:
    assert server.process is not None
    server.process.kill()
    server.process.wait(10)


async def stored_with(server: EmbeddedNats, message_id: str) -> int:
    client = await nats.connect(server.url)
    try:
        js = client.jetstream()
        info = await js.stream_info(subjects.INBOUND_STREAM)
        found = 0
        for sequence in range(info.state.first_seq, info.state.last_seq + 1):
            message = await js.get_msg(subjects.INBOUND_STREAM, sequence)
            found += (message.headers or {}).get("Nats-Msg-Id") == message_id
        return found
    finally:
        await client.close()


async def test_a_submission_sent_while_the_broker_restarts_is_stored_once_when_it_is_back(
    broker: EmbeddedNats,
) -> None:
    journeys = await Journeys.connect(broker.url, TENANT)
    try:
        kill(broker)
        sending = asyncio.create_task(journeys.submit(b'{"submission_id": "s-1"}', "resend-1", within=30))
        await asyncio.sleep(1.5)  # the length of the outage
        assert not sending.done(), "the client waited for the broker instead of giving up"
        broker.start()
        journey = await asyncio.wait_for(sending, 30)
        assert journey.message_id == "resend-1"
    finally:
        await journeys.close()
    assert await stored_with(broker, "resend-1") == 1


async def test_a_broker_away_past_the_deadline_is_reported_as_unknown_naming_the_message(
    broker: EmbeddedNats,
) -> None:
    journeys = await Journeys.connect(broker.url, TENANT)
    try:
        kill(broker)
        started = time.monotonic()
        with pytest.raises(StoreUnknown) as raised:
            await journeys.submit(b"{}", "resend-2", within=8)
        # the deadline, overrun by at most one attempt's ack timeout (5 s)
        assert 8 - 2 <= time.monotonic() - started <= 8 + 5 + 1
        assert raised.value.message_id == "resend-2" and raised.value.attempts >= 2
        assert "may or may not have been stored: send it again with the same message id" in str(raised.value)
    finally:
        broker.start()
        await journeys.close()
