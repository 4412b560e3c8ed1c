"""Ids at their maximum lengths, end to end over the real NATS JetStream, on SQLite and PostgreSQL.

PostgreSQL enforces column lengths that SQLite ignores: event ids built from the tenant and
submission ids once overflowed the 64-character outbox column there, and the accepted submission's
score and risk alert were dead-lettered. Every id the clinic chooses is given at its longest here
(tenant 64, submission, client and episode 128, clinician 128, command and actor 128, a reason of
500), through a late intake that re-sends the later scores, a risk alert and a clinician's command.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import nats
import pytest
from harness import running, settings_for, watching

from rapport.shared.messaging import subjects

pytestmark = pytest.mark.nats
SERVICES = ["ingest", "scoring", "alerts"]
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def longest(prefix: str, length: int = 128) -> str:
    """A synthetic id of exactly `length` characters, using every character the id rule allows."""
    core = f"{prefix}.{uuid.uuid4().hex}:/_-"
    return (core + "x" * length)[:length]


def phq9(sid: str, client: str, episode: str, clinician: str, total: int, day: int, item9: int = 0) -> bytes:
    items = [min(3, max(0, total - item9 - 3 * n)) for n in range(8)] + [item9]
    return json.dumps({
        "submission_id": sid, "instrument": "phq9", "client_id": client, "episode_id": episode,
        "clinician_id": clinician, "administered_at": (T0 + timedelta(days=day)).isoformat(),
        "responses": {str(n + 1): v for n, v in enumerate(items)},
    }).encode()


async def test_ids_at_their_maximum_lengths_flow_through_late_scores_alerts_and_commands(
    database_url: str, fresh_stream: str
) -> None:
    tenant = ("t" + uuid.uuid4().hex + "-" * 64)[:64]
    client, episode = longest("client"), longest("episode")
    clinician = longest("clinician").replace(".", "-").replace(":", "-").replace("/", "-")
    first, second, intake = longest("s2"), longest("s3"), longest("s1")
    async with running(SERVICES, settings_for(database_url), fresh_stream), \
            watching(fresh_stream, tenant) as watch:
        for sid, total, day, item9 in ((first, 9, 7, 0), (second, 14, 14, 2)):
            journey = await watch.submit(phq9(sid, client, episode, clinician, total, day, item9),
                                         message_id=longest("msg", 512))
            await asyncio.wait_for(journey.done.wait(), 30)
        critical = [e["data"]["alert"] for e in watch.alert_events if e["data"]["alert"]["kind"] == "critical_item"]
        assert [a["client_id"] for a in critical] == [client]
        late = await watch.submit(phq9(intake, client, episode, clinician, 4, 0), message_id=longest("msg", 512))
        await asyncio.wait_for(late.done.wait(), 30)
        await watch.wait_until(lambda: watch.by_submission[second].scores[second].get("re_placed_by") is not None)
        assert watch.by_submission[second].scores[second]["re_placed_by"] == f"{intake}:1"
        await watch.wait_until(lambda: any(e["data"]["alert"]["kind"] == "reliable_deterioration"
                                           for e in watch.alert_events))

        command = {"command_id": longest("cmd"), "alert_id": critical[0]["alert_id"], "action": "resolve",
                   "by": longest("by"), "reason": "r" * 500}
        connection = await nats.connect(fresh_stream)
        try:
            await connection.jetstream().publish(subjects.alert_commands_in(tenant), json.dumps(command).encode(),
                                                 headers={"Nats-Msg-Id": longest("command-message", 512)})
        finally:
            await connection.close()
        await watch.wait_until(lambda: any(e["data"]["transition"] == "resolved" for e in watch.alert_events))
        [resolved] = [e["data"] for e in watch.alert_events if e["data"]["transition"] == "resolved"]
        assert resolved["by"] == command["by"] and resolved["reason"] == command["reason"]
    assert not watch.command_rejections
    assert not await dead_letters(fresh_stream), "nothing dead-lettered"


async def dead_letters(url: str) -> int:
    connection = await nats.connect(url)
    try:
        info = await connection.jetstream().stream_info(subjects.DEADLETTER_STREAM)
        return int(info.state.messages)
    finally:
        await connection.close()
