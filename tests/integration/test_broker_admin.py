"""`rapport broker check|init` against a real nats-server of the test's own: check says what differs
from what Rapport expects and exits 1; init creates the streams as the services would, adds the
subjects an upgrade needs (the attendance events), keeps what the operator set, and says what the
broker refuses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio
from guarded_nats import GuardedNats, users_block
from nats.aio.client import Client
from typer.testing import CliRunner

from rapport.broker_admin import check_command, init_command
from rapport.cli import app
from rapport.shared.messaging.broker import connect_client
from rapport.shared.messaging.streams import stream_configs
from rapport.shared.messaging.subjects import EVENT_STREAM, INBOUND_STREAM, STREAM_SUBJECTS
from rapport.shared.settings import Settings

pytestmark = pytest.mark.nats
DAY = 24 * 3600
ATTENDANCE = "rapport.*.attendance.>"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GuardedNats]:
    broker = GuardedNats(tmp_path / "nats", "").start()
    yield broker
    broker.stop()


@pytest_asyncio.fixture
async def client(server: GuardedNats) -> AsyncIterator[Client]:
    connection = await connect_client(Settings(), server.url, name="test")
    yield connection
    await connection.close()


async def test_an_empty_broker_is_reported_missing_then_init_creates_every_stream(server: GuardedNats) -> None:
    code, text = await check_command(Settings(), server.url)
    assert code == 1
    for stream in STREAM_SUBJECTS:
        assert f"{stream:<12} MISSING" in text
    code, text = await init_command(Settings(), server.url)
    assert code == 0, text
    assert all(f"created {stream}" in text for stream in STREAM_SUBJECTS)
    code, text = await check_command(Settings(), server.url)
    assert code == 0, text
    assert "every stream is as Rapport expects" in text
    assert "subjects     rapport.*.in.>" in text and "replicas 1  storage file  retention workqueue" in text
    code, text = await init_command(Settings(), server.url)
    assert (code, text.splitlines()[1]) == (0, "nothing to change")


async def test_a_stream_from_before_the_attendance_events_is_off_and_init_adds_the_subject_keeping_the_rest(
        server: GuardedNats, client: Client) -> None:
    js = client.jetstream()
    for wanted in stream_configs(Settings()):
        if wanted.name == EVENT_STREAM:
            # created by an earlier Rapport, and an operator kept events for three days
            wanted = replace(wanted, subjects=[s for s in wanted.subjects or [] if s != ATTENDANCE], max_age=3 * DAY)
        await js.add_stream(wanted)
    code, text = await check_command(Settings(), server.url)
    assert code == 1
    assert f"{EVENT_STREAM:<12} OFF" in text and f"subjects ['{ATTENDANCE}'] are not captured" in text
    assert f"{INBOUND_STREAM:<12} ok" in text

    code, text = await init_command(Settings(), server.url)
    assert code == 0, text
    assert f"added to {EVENT_STREAM} the subjects {ATTENDANCE}" in text
    found = (await js.stream_info(EVENT_STREAM)).config
    assert ATTENDANCE in (found.subjects or []) and found.max_age == 3 * DAY
    assert (await check_command(Settings(), server.url))[0] == 0


async def test_what_weakens_a_guarantee_is_off_and_what_init_may_not_change_is_left_and_said(
        server: GuardedNats, client: Client) -> None:
    js = client.jetstream()
    for wanted in stream_configs(Settings()):
        if wanted.name == INBOUND_STREAM:
            wanted = replace(wanted, duplicate_window=120.0)
        await js.add_stream(wanted)
    code, text = await check_command(Settings(), server.url)
    assert code == 1 and "one tenant's message id can make another's vanish" in text
    code, text = await init_command(Settings(), server.url)
    assert code == 1 and "left as it is" in text and INBOUND_STREAM in text.splitlines()[-1]
    assert (await js.stream_info(INBOUND_STREAM)).config.duplicate_window == 120.0


async def test_replicas_the_broker_cannot_give_are_reported_not_crashed_on(server: GuardedNats) -> None:
    settings = Settings(stream_replicas=3)
    code, text = await init_command(settings, server.url)
    assert code == 1
    assert all(f"could not create {stream}" in text for stream in STREAM_SUBJECTS), text


def test_the_command_line_prints_the_broker_without_its_password(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    password = "broker-admin-secret-5d1e"
    server = GuardedNats(tmp_path / "nats", users_block("rapport", password)).start()
    try:
        url = server.url.replace("nats://", f"nats://rapport:{password}@")
        monkeypatch.setenv("RAPPORT_BROKER_URL", url)
        runner = CliRunner()
        result = runner.invoke(app, ["broker", "init"])
        assert result.exit_code == 0, result.output
        result = runner.invoke(app, ["broker", "check"])
        assert result.exit_code == 0, result.output
        assert f"broker {server.url}" in result.output and password not in result.output
    finally:
        server.stop()
