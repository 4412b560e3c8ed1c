"""One settings object for every service and command, read from RAPPORT_* environment variables."""

from __future__ import annotations

import os
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def normalise_database_url(url: str) -> str:
    """Give SQLAlchemy the async driver whatever form of URL the operator wrote."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    return url


# settings that may carry a password, and so may be given as a file (a mounted secret) instead
SECRET_FIELDS = ("database_url", "broker_url", "broker_password", "oidc_client_secret")


# the one SQLite file every service shared before each had its own (Settings.database_url_of)
SHARED_SQLITE_FILE = "rapport.db"

class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAPPORT_", env_ignore_empty=True, extra="ignore")

    data_dir: Path = Field(default=Path(".rapport"), description="where the embedded stack keeps its files")
    broker_url: str | None = Field(default=None, description="nats://host:port; unset: the embedded broker")
    database_url: str | None = Field(default=None, description="unset: SQLite under data_dir")
    # Signing in to an external broker (unset: none; on the embedded stack, the users of the tenant
    # registry, rapport/tenants.py, which `rapport up` and the commands set themselves). At most one
    # way: a user and password, a NATS .creds file (user JWT and NKey seed), or an NKey seed file.
    # TLS: the CA that signed the broker's certificate, and a client certificate and key for a
    # broker that asks for one (`verify: true`). Every connection Rapport makes uses them
    # (shared/messaging/broker.py); the password never appears in a log line, an error or a repr.
    broker_user: str | None = None
    broker_password: SecretStr | None = None
    broker_creds: Path | None = None
    broker_nkey_seed_file: Path | None = None
    broker_tls_ca: Path | None = None
    broker_tls_cert: Path | None = None
    broker_tls_key: Path | None = None
    # a clinic system's connection signed in as a tenant user (`rapport tenants add`) may
    # subscribe only to its own inboxes (where JetStream acks arrive): _INBOX_<tenant>
    broker_inbox_prefix: str | None = Field(default=None, pattern=r"^_INBOX_[a-z0-9_-]{1,64}$")
    log_level: str = "INFO"
    # batching on the hot path: how many messages a service takes from the broker at once, and
    # how long it waits to fill a batch before working on what it has
    batch_size: int = Field(default=100, ge=1, le=1000)
    batch_wait_seconds: float = Field(default=0.005, gt=0, le=5)
    # A transient fault (database or broker away, a lock conflict) pauses consumption and retries the
    # batch in place with this capped backoff, for as long as the fault lasts: it never dead-letters.
    retry_backoff_seconds: list[float] = Field(default=[1.0, 2.0, 5.0, 10.0, 30.0], min_length=1)
    # A defect (an error in Rapport's own code or schema, not in the message) is retried this many
    # deliveries, then dead-lettered with its error so it can be redriven once fixed.
    max_deliver: int = Field(default=6, ge=2, le=100)
    ack_wait_seconds: float = Field(default=60.0, gt=0, description="redelivery of a batch nobody acked")
    publish_timeout_seconds: float = Field(default=10.0, gt=0)
    # every database statement and every transaction is bounded, so a silent connection is a fault
    # that pauses consumption, not a stall
    statement_timeout_seconds: float = Field(default=15.0, gt=0)
    transaction_timeout_seconds: float = Field(default=30.0, gt=0)
    readiness_timeout_seconds: float = Field(default=2.0, gt=0)
    # readiness fails when a consumer has messages waiting but has taken none for this long
    stall_seconds: float = Field(default=120.0, gt=0)
    # how long each stream keeps messages; consumers' inboxes remember message ids longer than any
    # of these, so a recreated consumer that replays a stream does nothing twice
    inbound_retention_days: float = Field(default=7.0, gt=0, le=30)
    event_retention_days: float = Field(default=7.0, gt=0, le=30)
    deadletter_retention_days: float = Field(default=30.0, gt=0, le=365)
    # replicas of each stream Rapport creates: 1 on a single node, 3 on a cluster (R3)
    stream_replicas: int = Field(default=1, ge=1, le=5)
    # What an acknowledgement from the broker means. `always`: every write is synced to disk before
    # the broker acknowledges it (the default: a single node has nothing else to fall back on). An
    # interval (`2m`, `10s`) syncs in the background: faster, and a power failure can lose what was
    # acknowledged in the last interval; choose it only with R3 replication. The embedded broker is
    # started with it; for an external broker it states what the operator configured there.
    broker_sync: str = Field(default="always", pattern=r"^(always|[1-9][0-9]*(ms|s|m|h))$")
    # metric labels carry a tenant id for at most this many tenants per process; the rest are "_other"
    metrics_max_tenants: int = Field(default=100, ge=1, le=10_000)
    graceful_timeout_seconds: float = Field(default=20.0, gt=0)
    # submissions without an episode id: a new episode after this long without an administration
    # (a Rapport default, not a sourced clinical fact; see services/scoring/episodes.py)
    episode_gap_days: float = Field(default=90.0, ge=1)
    # how often the alerts service re-reads the expected trajectories `rapport trajectories fit` stored
    trajectory_refresh_seconds: float = Field(default=60.0, ge=0)
    # tenants that have enabled licensed instruments (ORS, SRS, ...): "acme:ors,srs;beta:srs"
    licensed_instruments: str = ""
    # Removed: a tenant's attendance thresholds are part of its clinical policy (`rapport policy set`,
    # signed off and versioned). A value here stops a service at start rather than being silently ignored.
    attendance_policy: str = ""
    # The gateway (HTTP and FHIR). How long a request waits for ingest's answer before it is answered
    # 202; the largest body it takes (it also stays below the broker's max_payload, whatever is set
    # here); the port `rapport up` gives it when that port is free.
    gateway_answer_wait_seconds: float = Field(default=5.0, gt=0, le=60)
    gateway_max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    gateway_port: int = Field(default=8480, ge=1, le=65535)
    # Sign-in. Without an OIDC issuer, bearer tokens are verified with the embedded signing key
    # (`rapport token` mints them; `rapport up` creates the key, mode 0600). The audience tokens
    # must name, either way.
    token_key_file: Path | None = Field(default=None, description="default: <data_dir>/token-signing-key.pem")
    # With an issuer (its exact `iss`, e.g. https://login.clinic.example/realms/clinic), tokens are
    # verified against its JWKS (found by discovery, or at oidc_jwks_url), with these algorithms,
    # and the tenant, role and clinician read from these claims (dotted for nested ones).
    oidc_issuer: str | None = Field(default=None, pattern=r"^https?://")
    oidc_audience: str = "rapport"
    oidc_jwks_url: str | None = Field(default=None, pattern=r"^https?://")
    oidc_algorithms: str = Field(default="RS256,ES256,EdDSA", pattern=r"^[A-Za-z0-9]+(,[A-Za-z0-9]+)*$")
    oidc_tenant_claim: str = Field(default="tenant", min_length=1)
    oidc_role_claim: str = Field(default="role", min_length=1)
    oidc_clinician_claim: str = Field(default="clinician", min_length=1)
    # The dashboard's sign-in with the issuer: the authorization code flow with PKCE, as the client
    # registered there (redirect URI <RAPPORT_GATEWAY_PUBLIC_URL>/sign-in/callback); the secret only
    # for a confidential client. Unset: the dashboard has no OIDC sign-in.
    oidc_client_id: str | None = Field(default=None, min_length=1, max_length=255)
    oidc_client_secret: str | None = None
    # Notification delivery (the gateway): webhooks and e-mail for the notify events. The SMTP relay
    # (smtp://[user:password@]host[:port], upgraded with STARTTLS when the relay offers it, or
    # smtps:// for TLS from the first byte; unset: no e-mail), the From address, the base URL the
    # links to an alert start with, how long a receiver may take to answer, the waits between one
    # try and the next (a delivery is tried once more than there are waits, then dead; the default
    # is the Standard Webhooks example schedule, about three days), and how often the sender looks
    # for deliveries that are due.
    smtp_url: str | None = Field(default=None, pattern=r"^smtps?://")
    smtp_from: str = "rapport@localhost"
    gateway_public_url: str | None = Field(default=None, description="default: http://localhost:<gateway_port>")
    webhook_timeout_seconds: float = Field(default=15.0, gt=0, le=120)
    notify_retry_seconds: list[float] = Field(
        default=[5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0])
    notify_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    # Where webhooks may go (services/gateway/notifications/egress.py): only public addresses over
    # https, unless allowed here. Host names, addresses or networks (CIDR), comma-separated, that may
    # be reached although they are loopback, private or link-local (a receiver inside the clinic's
    # network: "hooks.clinic.internal,10.20.0.0/16"); and whether plain http is allowed.
    webhook_allow_hosts: str = ""
    webhook_allow_http: bool = False
    # The key webhook secrets are sealed with at rest (services/gateway/notifications/sealing.py):
    # a file holding 32 random bytes in base64; it must exist (a new key opens nothing). Unset: the
    # embedded stack (no token key file named, no issuer) makes <data_dir>/webhook-secrets.key at
    # the gateway's first start; any other gateway stores the secrets unsealed and says so at start.
    secrets_key_file: Path | None = None

    @property
    def inbox_retention(self) -> timedelta:
        """Longer than any stream keeps a message, so every redelivery or replay is recognised."""
        return timedelta(days=max(self.inbound_retention_days, self.event_retention_days) + 7)

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, values: Any) -> Any:
        """RAPPORT_DATABASE_URL_FILE, RAPPORT_BROKER_URL_FILE: read the value from a file (a mounted
        secret) rather than the environment, where every process listing can show it."""
        if not isinstance(values, dict):
            return values
        for name in SECRET_FIELDS:
            path = os.environ.get(f"RAPPORT_{name.upper()}_FILE")
            if path and not values.get(name) and not os.environ.get(f"RAPPORT_{name.upper()}"):
                try:
                    values[name] = Path(path).read_text().strip()
                except OSError as error:
                    raise ValueError(f"RAPPORT_{name.upper()}_FILE names {path}, which cannot be read "
                                     f"({type(error).__name__})") from None
        return values

    @model_validator(mode="after")
    def _one_broker_sign_in(self) -> Settings:
        ways = [name for name, value in (("RAPPORT_BROKER_USER", self.broker_user),
                                         ("RAPPORT_BROKER_CREDS", self.broker_creds),
                                         ("RAPPORT_BROKER_NKEY_SEED_FILE", self.broker_nkey_seed_file)) if value]
        if len(ways) > 1:
            raise ValueError(f"{' and '.join(ways)} are both set: the broker takes one way of signing in")
        if self.broker_password is not None and not self.broker_user:
            raise ValueError("RAPPORT_BROKER_PASSWORD is set without RAPPORT_BROKER_USER")
        if bool(self.broker_tls_cert) != bool(self.broker_tls_key):
            raise ValueError("RAPPORT_BROKER_TLS_CERT and RAPPORT_BROKER_TLS_KEY go together (a client certificate "
                             "and its key)")
        return self

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        return normalise_database_url(value) if value else value

    @field_validator("attendance_policy")
    @classmethod
    def _policy(cls, value: str) -> str:
        if value.strip():
            raise ValueError("RAPPORT_ATTENDANCE_POLICY is no longer read: put the attendance thresholds in the "
                             "tenant's clinical policy ([rules.disengagement] in `rapport policy set --file`)")
        return value

    @field_validator("notify_retry_seconds")
    @classmethod
    def _waits(cls, value: list[float]) -> list[float]:
        if any(wait < 0 for wait in value):
            raise ValueError("waits between notification tries are seconds, 0 or more")
        return value

    def database_url_of(self, service: str) -> str:
        """Where `service` keeps its tables. RAPPORT_DATABASE_URL when set: every service in that one
        database, as in production. Otherwise an SQLite file of the service's own in the data dir
        (`<service>.db`), so that no service waits for another's write lock; a data dir that holds the
        one file earlier releases shared (`rapport.db`) goes on using it for every service, so nothing
        stored there is left behind."""
        if self.database_url:
            return self.database_url
        shared = self.data_dir / SHARED_SQLITE_FILE
        path = shared if shared.exists() else self.data_dir / f"{service}.db"
        return f"sqlite+aiosqlite:///{path.resolve()}"

    def resolved_token_key_file(self) -> Path:
        return self.token_key_file or self.data_dir / "token-signing-key.pem"

    def resolved_public_url(self) -> str:
        """Where people reach the gateway: the start of every link in a notification."""
        return (self.gateway_public_url or f"http://localhost:{self.gateway_port}").rstrip("/")

    def licensed_for(self, tenant: str) -> frozenset[str]:
        return self._licences.get(tenant, frozenset())

    @cached_property
    def _licences(self) -> dict[str, frozenset[str]]:
        licences = {}
        for entry in self.licensed_instruments.split(";"):
            name, _, instruments = entry.partition(":")
            licences[name.strip()] = frozenset(i.strip() for i in instruments.split(",") if i.strip())
        return licences


def get_settings() -> Settings:
    return Settings()
