"""Settings read as operators give them: secrets from files, unsafe values refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from rapport.shared.settings import Settings


def test_the_database_url_can_come_from_a_mounted_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "database-url"
    secret.write_text("postgresql://rapport:synthetic-password@db:5432/rapport\n")
    monkeypatch.delenv("RAPPORT_DATABASE_URL", raising=False)
    monkeypatch.setenv("RAPPORT_DATABASE_URL_FILE", str(secret))
    assert Settings().database_url == "postgresql+asyncpg://rapport:synthetic-password@db:5432/rapport"


def test_an_unreadable_secret_file_is_named_and_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAPPORT_DATABASE_URL", raising=False)
    monkeypatch.setenv("RAPPORT_DATABASE_URL_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValidationError, match=r"RAPPORT_DATABASE_URL_FILE names .*missing, which cannot be read"):
        Settings()


def test_a_broker_sync_that_is_neither_always_nor_an_interval_is_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(broker_sync="sometimes")


def test_each_service_has_an_sqlite_file_of_its_own_in_a_new_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=None)
    assert {name: settings.database_url_of(name) for name in ("ingest", "gateway")} == {
        "ingest": f"sqlite+aiosqlite:///{tmp_path.resolve() / 'ingest.db'}",
        "gateway": f"sqlite+aiosqlite:///{tmp_path.resolve() / 'gateway.db'}"}


def test_a_data_dir_of_an_earlier_release_keeps_its_one_file_for_every_service(tmp_path: Path) -> None:
    (tmp_path / "rapport.db").touch()
    settings = Settings(data_dir=tmp_path, database_url=None)
    assert {settings.database_url_of(name) for name in ("ingest", "scoring", "alerts", "gateway")} == {
        f"sqlite+aiosqlite:///{tmp_path.resolve() / 'rapport.db'}"}


def test_a_database_url_holds_every_service(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url="postgresql://u@h/db")
    assert {settings.database_url_of(name) for name in ("ingest", "alerts")} == {"postgresql+asyncpg://u@h/db"}
