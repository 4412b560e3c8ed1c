"""One settings object for every service and command, read from RAPPORT_* environment variables."""

from __future__ import annotations

from functools import cached_property, lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def normalise_database_url(url: str) -> str:
    """Give SQLAlchemy the async driver whatever form of URL the operator wrote."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAPPORT_", env_ignore_empty=True, extra="ignore")

    data_dir: Path = Field(default=Path(".rapport"), description="where the embedded stack keeps its files")
    broker_url: str | None = Field(default=None, description="nats://host:port; unset: the embedded broker")
    database_url: str | None = Field(default=None, description="unset: SQLite under data_dir")
    log_level: str = "INFO"
    # batching on the hot path: how many messages a service takes from the broker at once, and
    # how long it waits to fill a batch before working on what it has
    batch_size: int = Field(default=100, ge=1, le=1000)
    batch_wait_seconds: float = Field(default=0.005, gt=0, le=5)
    # redelivery of a message that failed for a transient reason (database down, broker timeout)
    max_deliver: int = Field(default=6, ge=2, le=100)
    retry_backoff_seconds: list[float] = Field(default=[1.0, 2.0, 5.0, 10.0, 30.0])
    ack_wait_seconds: float = Field(default=60.0, gt=0, description="redelivery of a batch nobody acked")
    publish_timeout_seconds: float = Field(default=10.0, gt=0)
    graceful_timeout_seconds: float = Field(default=20.0, gt=0)
    # submissions without an episode id: a new episode after this long without an administration
    # (a Rapport default, not a sourced clinical fact; see services/scoring/episodes.py)
    episode_gap_days: float = Field(default=90.0, ge=1)
    # how often the alerts service re-reads the expected trajectories `rapport trajectories fit` stored
    trajectory_refresh_seconds: float = Field(default=60.0, ge=0)
    # tenants that have enabled licensed instruments (ORS, SRS, ...): "acme:ors,srs;beta:srs"
    licensed_instruments: str = ""

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        return normalise_database_url(value) if value else value

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'rapport.db').resolve()}"

    def licensed_for(self, tenant: str) -> frozenset[str]:
        return self._licences.get(tenant, frozenset())

    @cached_property
    def _licences(self) -> dict[str, frozenset[str]]:
        licences = {}
        for entry in self.licensed_instruments.split(";"):
            name, _, instruments = entry.partition(":")
            licences[name.strip()] = frozenset(i.strip() for i in instruments.split(",") if i.strip())
        return licences


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
