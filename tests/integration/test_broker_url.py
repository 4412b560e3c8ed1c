"""A cluster's servers in RAPPORT_BROKER_URL, comma-separated as the README and deploy files write them."""

from __future__ import annotations

import pytest

from rapport.shared.messaging.broker import broker_servers, make_broker
from rapport.shared.settings import Settings

pytestmark = pytest.mark.nats


def test_a_comma_separated_url_is_a_list_of_servers() -> None:
    assert broker_servers("nats://a:4222, nats://b:4222,nats://c:4222") == [
        "nats://a:4222", "nats://b:4222", "nats://c:4222"]


async def test_a_service_connects_through_a_list_of_servers_whose_first_is_down(nats_url: str) -> None:
    broker = make_broker(Settings(), f"nats://127.0.0.1:1,{nats_url}", service="test")
    try:
        await broker.connect()
        assert await broker.ping(timeout=5)
    finally:
        await broker.stop()
