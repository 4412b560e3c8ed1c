"""Signing in to a broker that requires it, and TLS (issue 16 item 1), against real nats-servers the
tests start: the services and Rapport's clients (rapport submit, bench, demo use Journeys) sign in
with RAPPORT_BROKER_USER/PASSWORD, an NKey seed, or over TLS with the CA given, and the pipeline
works; wrong credentials or an unaccepted certificate stop the connection at once with the
setting named, never the password, instead of nats-py retrying for ever."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nkeys
import pytest
import pytest_asyncio
from guarded_nats import Certificates, GuardedNats, make_certificates, tls_block, users_block
from harness import running, settings_for

from rapport.journeys import Journeys
from rapport.shared.messaging.broker import BrokerRefused, connect_client, make_broker
from rapport.shared.settings import Settings

pytestmark = pytest.mark.nats

PASSWORD = "correct-horse-battery-staple-7f3a"
WRONG = "not-the-password-91c2"


def phq9(sid: str) -> bytes:
    return json.dumps({
        "submission_id": sid, "instrument": "phq9", "client_id": "client-0001", "episode_id": "client-0001-ep1",
        "clinician_id": "clinician-01", "administered_at": "2026-03-02T10:00:00+00:00",
        "responses": {str(n + 1): 1 for n in range(9)},
    }).encode()


@pytest_asyncio.fixture
async def sqlite_database(sqlite_databases: Any) -> str:
    return str(await sqlite_databases.sqlite())


@pytest.fixture
def with_users(tmp_path: Path) -> Iterator[GuardedNats]:
    server = GuardedNats(tmp_path / "nats", users_block("rapport", PASSWORD)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def with_tls(tmp_path: Path, certificates: Certificates) -> Iterator[GuardedNats]:
    server = GuardedNats(tmp_path / "nats", tls_block(certificates) + users_block("rapport", PASSWORD)).start()
    yield server
    server.stop()


async def scored_through(url: str, settings: Settings, tenant: str) -> None:
    """ingest and scoring signed in as `settings` says; a client signed in the same way submits a PHQ-9."""
    async with running(["ingest", "scoring"], settings, url):
        journeys = await Journeys.connect(url, tenant, settings)
        try:
            journey = await journeys.submit(phq9("sub-0001"))
            await journeys.wait_until(lambda: "sub-0001" in journey.scores, 30)
        finally:
            await journeys.close()
    assert journey.answers[0]["kind"] == "rapport.submission.accepted.v1"
    assert journey.scores["sub-0001"]["score"]["total"] == 9


async def refused(settings: Settings, url: str) -> str:
    """Both ways Rapport connects refuse, within seconds; the message each gives (the same)."""
    started = time.monotonic()
    broker = make_broker(settings, url, service="test")
    try:
        with pytest.raises(BrokerRefused) as service_error:
            await asyncio.wait_for(broker.connect(), 15)
    finally:
        await broker.stop()
    with pytest.raises(BrokerRefused) as client_error:
        await asyncio.wait_for(connect_client(settings, url, name="test", max_reconnect_attempts=-1), 15)
    assert time.monotonic() - started < 15
    assert str(service_error.value) == str(client_error.value)
    return str(service_error.value)


async def test_the_services_and_clients_sign_in_with_user_and_password(
        with_users: GuardedNats, sqlite_database: str, tenant: str) -> None:
    settings = settings_for(sqlite_database, broker_user="rapport", broker_password=PASSWORD)
    await scored_through(with_users.url, settings, tenant)


async def test_a_wrong_password_is_refused_at_once_naming_the_settings_never_the_password(
        with_users: GuardedNats, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    message = await refused(Settings(broker_user="rapport", broker_password=WRONG), with_users.url)
    assert "Authorization Violation" in message
    assert "RAPPORT_BROKER_USER and RAPPORT_BROKER_PASSWORD" in message
    everything = message + caplog.text + "".join(capsys.readouterr())
    assert WRONG not in everything and PASSWORD not in everything


async def test_no_credentials_at_all_says_which_settings_exist(with_users: GuardedNats) -> None:
    message = await refused(Settings(), with_users.url)
    assert "none is set" in message and "RAPPORT_BROKER_CREDS" in message


async def test_credentials_in_the_url_are_named_as_such_and_not_repeated(with_users: GuardedNats) -> None:
    url = with_users.url.replace("nats://", f"nats://rapport:{WRONG}@")
    message = await refused(Settings(), url)
    assert "the user and password in RAPPORT_BROKER_URL" in message and WRONG not in message


async def test_the_password_comes_from_a_file_and_never_shows_in_the_settings(
        with_users: GuardedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "broker_password"
    secret.write_text(PASSWORD + "\n")
    monkeypatch.setenv("RAPPORT_BROKER_USER", "rapport")
    monkeypatch.setenv("RAPPORT_BROKER_PASSWORD_FILE", str(secret))
    settings = Settings()
    assert settings.broker_password is not None and settings.broker_password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())
    client = await connect_client(settings, with_users.url, name="test")
    await client.close()


def test_one_way_of_signing_in_at_a_time(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RAPPORT_BROKER_USER and RAPPORT_BROKER_CREDS are both set"):
        Settings(broker_user="rapport", broker_password="x", broker_creds=tmp_path / "x.creds")
    with pytest.raises(ValueError, match="RAPPORT_BROKER_PASSWORD is set without RAPPORT_BROKER_USER"):
        Settings(broker_password="x")
    with pytest.raises(ValueError, match="go together"):
        Settings(broker_tls_cert=tmp_path / "c.pem")


async def test_a_missing_credentials_file_is_named(tmp_path: Path, with_users: GuardedNats) -> None:
    with pytest.raises(BrokerRefused, match=r"RAPPORT_BROKER_NKEY_SEED_FILE names .*which cannot be read"):
        await connect_client(Settings(broker_nkey_seed_file=tmp_path / "absent.nk"), with_users.url, name="test")


async def test_an_nkey_seed_file_signs_in(tmp_path: Path) -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed)
    other = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    other_file = tmp_path / "other.nk"
    other_file.write_bytes(other)
    server = GuardedNats(tmp_path / "nats", f'authorization {{\n  users = [ {{ nkey: "{public}" }} ]\n}}\n').start()
    try:
        client = await connect_client(Settings(broker_nkey_seed_file=seed_file), server.url, name="test")
        assert client.is_connected
        await client.close()
        message = await refused(Settings(broker_nkey_seed_file=other_file), server.url)
        assert "RAPPORT_BROKER_NKEY_SEED_FILE" in message and other.decode() not in message
    finally:
        server.stop()


async def test_over_tls_with_the_ca_given_the_pipeline_works(
        with_tls: GuardedNats, certificates: Certificates, sqlite_database: str, tenant: str) -> None:
    settings = settings_for(sqlite_database, broker_user="rapport", broker_password=PASSWORD,
                            broker_tls_ca=certificates.ca)
    await scored_through(with_tls.url, settings, tenant)


async def test_a_broker_certificate_from_an_unknown_ca_is_refused_naming_the_ca_setting(
        with_tls: GuardedNats) -> None:
    message = await refused(Settings(broker_user="rapport", broker_password=PASSWORD), with_tls.url)
    assert "RAPPORT_BROKER_TLS_CA" in message and "certificate" in message


async def test_tls_asked_for_and_a_broker_without_it_is_refused(
        with_users: GuardedNats, certificates: Certificates) -> None:
    settings = Settings(broker_user="rapport", broker_password=PASSWORD, broker_tls_ca=certificates.ca)
    with pytest.raises(BrokerRefused, match="does not use TLS"):
        await connect_client(settings, with_users.url, name="test")


async def test_a_broker_that_asks_for_a_client_certificate_gets_it(tmp_path: Path, certificates: Certificates) -> None:
    server = GuardedNats(tmp_path / "nats", tls_block(certificates, verify_clients=True)).start()
    try:
        settings = Settings(broker_tls_ca=certificates.ca, broker_tls_cert=certificates.client_cert,
                            broker_tls_key=certificates.client_key)
        client = await connect_client(settings, server.url, name="test")
        assert client.is_connected
        await client.close()
        message = await refused(Settings(broker_tls_ca=certificates.ca), server.url)
        assert "RAPPORT_BROKER_TLS_CERT" in message
    finally:
        server.stop()


async def test_a_broker_not_reachable_at_start_is_said_once_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    from rapport.embedded_nats import free_port

    port = free_port()
    broker = make_broker(Settings(), f"nats://rapport:{WRONG}@127.0.0.1:{port}", service="test")
    caplog.set_level(logging.WARNING, logger="rapport.broker")
    try:
        with pytest.raises(TimeoutError):  # still trying: a broker coming up later is found
            await asyncio.wait_for(broker.connect(), 5)
    finally:
        await broker.stop()
    said = [r.getMessage() for r in caplog.records if r.name == "rapport.broker"]
    assert len(said) == 1, said  # nats-py tries again every 2 s: said once, then every 30 s
    assert said[0].startswith(f"cannot reach the broker at nats://127.0.0.1:{port} yet")
    assert WRONG not in said[0]
