"""The tenant registry (issue 16 item 2): a broker user per tenant for its clinic systems, and the
embedded broker's authorization, built from it. `rapport tenants add|list`.

A clinic system signed in as tenant T may publish only its submissions, attendance and alert commands
(`rapport.T.in.submissions`, `.in.attendance`, `.in.alert-commands`: not the questionnaire-mapping
commands, which are an admin's, through the gateway and its audit trail) and subscribe only to
`rapport.T.>` (the answers and events about its own tenant)
and to its own inboxes, `_INBOX_T.>`, where JetStream's acknowledgements of its publishes arrive.
Everything else (another tenant's subjects, the services' inboxes, which carry the messages the
services pull, the JetStream API) is refused by the server. The services have a user of their own
with every permission.

The registry is a directory, `<data dir>/tenants/`: one NKey seed per tenant, `<tenant>.nk` (the
secret, readable by its owner only, given to the clinic system), and nothing else. A tenant is in
the registry when its seed is there; a seed is never replaced (that would lock the clinic system
out). The embedded broker (`rapport up`) runs with authorization on: its config includes
`nats-users.conf`, written from the registry and the services' seed (`broker-services.nk`), and a
tenant added while it runs is installed by rewriting that file and asking the server to reload it
(SIGHUP), then waiting until `/varz` shows the new configuration loaded. Commands that talk to the
embedded stack sign in as the tenant they act for (`rapport submit`, `demo`, `evaluate`, `bench`
add it on first use) or, for the operator's commands, as the services. An external broker's
authorization is its operator's: `rapport tenants add` prints the entry to install there.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

from rapport.shared.contracts.tenancy import is_tenant_id
from rapport.shared.messaging.subjects import PREFIX, alert_commands_in, attendance_in, submissions_in
from rapport.shared.settings import Settings

REGISTRY = "tenants"
SERVICES_SEED = "broker-services.nk"
USERS_CONFIG = "nats-users.conf"
# where a running embedded broker is described in endpoints.json (rapport/stack.py)
EMBEDDED_BROKER = "embedded_broker"


def inbox_prefix(tenant: str) -> str:
    return f"_INBOX_{tenant}"


def permissions(tenant: str) -> dict[str, dict[str, list[str]]]:
    return {
        "publish": {"allow": [submissions_in(tenant), attendance_in(tenant), alert_commands_in(tenant)]},
        "subscribe": {"allow": [f"{PREFIX}.{tenant}.>", f"{inbox_prefix(tenant)}.>"]},
    }


@dataclass(frozen=True)
class TenantUser:
    tenant: str
    public_key: str
    seed_file: Path

    def config_entry(self) -> str:
        """One entry of the server's `authorization { users = [ ... ] }` (NATS config accepts JSON values)."""
        perms = permissions(self.tenant)
        return (f"{{ nkey: {json.dumps(self.public_key)}, permissions: {{ "
                f"publish: {{ allow: {json.dumps(perms['publish']['allow'])} }}, "
                f"subscribe: {{ allow: {json.dumps(perms['subscribe']['allow'])} }} }} }}  # tenant {self.tenant}")

    def client_settings(self, settings: Settings) -> Settings:
        """`settings` signed in as this tenant's user (Rapport's own clients: submit, demo, bench)."""
        return settings.model_copy(update={
            "broker_nkey_seed_file": self.seed_file, "broker_inbox_prefix": inbox_prefix(self.tenant),
            "broker_user": None, "broker_password": None, "broker_creds": None})


def _private_seed(path: Path) -> str:
    """The public key of the user whose seed is at `path`, the seed created (0600) if it is not there."""
    if not path.exists():
        seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another command created it first: that one stands
            pass
        else:
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, seed + b"\n")
            finally:
                os.close(fd)
    return str(nkeys.from_seed(bytearray(path.read_bytes().strip())).public_key.decode())


def services_seed(data_dir: Path) -> Path:
    """The embedded stack's services' user (every permission), created on first use."""
    path = data_dir / SERVICES_SEED
    _private_seed(path)
    return path


class TenantRegistry:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def of(cls, data_dir: Path) -> TenantRegistry:
        return cls(data_dir / REGISTRY)

    def add(self, tenant: str) -> TenantUser:
        """Tenant `tenant`'s user: created with a new seed, or the one already registered."""
        if not is_tenant_id(tenant):
            raise ValueError(f"{tenant!r} is not a tenant id ([a-z0-9_-], 1 to 64 characters)")
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.directory / f"{tenant}.nk"
        return TenantUser(tenant, _private_seed(path), path)

    def find(self, tenant: str) -> TenantUser | None:
        path = self.directory / f"{tenant}.nk"
        if not is_tenant_id(tenant) or not path.exists():
            return None
        return TenantUser(tenant, _private_seed(path), path)

    def users(self) -> list[TenantUser]:
        if not self.directory.is_dir():
            return []
        found = (self.find(path.stem) for path in sorted(self.directory.glob("*.nk")))
        return [user for user in found if user is not None]

    def authorization(self, services_public_key: str) -> str:
        """The broker's whole `authorization` block: the services' user, then one user per tenant."""
        lines = [
            "# Written by Rapport (rapport/tenants.py) from the tenant registry; edits are overwritten.",
            "authorization {",
            "  users = [",
            f"    {{ nkey: {json.dumps(services_public_key)} }}  # the services: every permission",
            *(f"    {user.config_entry()}" for user in self.users()),
            "  ]",
            "}",
            "",
        ]
        return "\n".join(lines)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One command at a time adds tenants and rewrites the broker's users (several `rapport submit`
        for new tenants at once)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def write_users_config(data_dir: Path) -> Path:
    """`<data dir>/nats-users.conf` from the registry, as the embedded broker's config includes it."""
    from rapport.embedded_nats import write_private

    path = data_dir / USERS_CONFIG
    services = _private_seed(data_dir / SERVICES_SEED)
    write_private(path, TenantRegistry.of(data_dir).authorization(services))
    return path


class BrokerReloadFailed(RuntimeError):
    """The running embedded broker did not load its new users in time."""


def _config_load_time(monitor_url: str) -> str:
    with urllib.request.urlopen(f"{monitor_url}/varz", timeout=5) as response:
        varz: dict[str, Any] = json.loads(response.read())
    return str(varz.get("config_load_time"))


def reload_embedded_broker(broker: dict[str, Any], timeout: float = 10.0) -> None:
    """Ask the running embedded broker (`endpoints.json`'s `embedded_broker`: pid, monitoring URL) to
    reload its config, and wait until it has."""
    pid, monitor = int(broker["pid"]), str(broker["monitor"])
    before = _config_load_time(monitor)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _config_load_time(monitor) != before:
            return
        time.sleep(0.05)
    raise BrokerReloadFailed(f"the embedded broker (pid {pid}) did not reload its users within {timeout:.0f}s; "
                             f"see its log in the data dir")


def _running_embedded_broker(data_dir: Path) -> dict[str, Any] | None:
    from rapport.stack import read_endpoints

    broker = (read_endpoints(data_dir) or {}).get(EMBEDDED_BROKER)
    return broker if isinstance(broker, dict) else None


def add_tenant(data_dir: Path, tenant: str) -> tuple[TenantUser, bool]:
    """Register `tenant` (if it is not) and, when the embedded broker is running, install its user
    there. Returns the user and whether it was new."""
    registry = TenantRegistry.of(data_dir)
    existing = registry.find(tenant)
    if existing is not None:
        return existing, False
    with registry.locked():
        existing = registry.find(tenant)
        if existing is not None:
            return existing, False
        user = registry.add(tenant)
        broker = _running_embedded_broker(data_dir)
        if broker is not None:
            write_users_config(data_dir)
            reload_embedded_broker(broker)
        return user, True


def client_settings(settings: Settings, tenant: str | None = None) -> Settings:
    """How one of Rapport's commands signs in to the broker. With RAPPORT_BROKER_URL (an external
    broker): as configured (RAPPORT_BROKER_USER, _CREDS, _NKEY_SEED_FILE). On the embedded stack: as
    `tenant`'s user, registered and installed on first use, or, with no tenant (the operator's
    commands: dead letters, broker check), as the services."""
    if settings.broker_url:
        return settings
    data_dir = settings.data_dir.resolve()
    if tenant is None:
        return settings.model_copy(update={"broker_nkey_seed_file": services_seed(data_dir),
                                           "broker_inbox_prefix": None})
    user, _new = add_tenant(data_dir, tenant)
    return user.client_settings(settings)


def add_command(tenant: str, data_dir: Path) -> str:
    user, new = add_tenant(data_dir, tenant)
    running = _running_embedded_broker(data_dir) is not None
    return "\n".join([
        f"tenant {tenant}: {'added' if new else 'already registered'}; seed {user.seed_file} "
        "(mode 0600; give it to the clinic system, nothing else needs it)",
        f"the embedded broker {'now lets it in' if running else 'lets it in from the next `rapport up`'}",
        "",
        "for an external broker, add to its authorization block, beside the services' user, then reload it",
        "(`nats-server --signal reload`):",
        "  authorization {",
        "    users = [",
        "      # ... the services' user, with every permission",
        f"      {user.config_entry()}",
        "    ]",
        "  }",
        "",
        "the clinic system connects with that seed; Rapport's clients (rapport submit) with:",
        f"  RAPPORT_BROKER_NKEY_SEED_FILE={user.seed_file} RAPPORT_BROKER_INBOX_PREFIX={inbox_prefix(tenant)}",
        f"it may publish to {', '.join(permissions(tenant)['publish']['allow'])} and subscribe to "
        f"{PREFIX}.{tenant}.> and {inbox_prefix(tenant)}.>, nothing else",
    ])


def list_command(data_dir: Path, as_json: bool) -> str:
    users = TenantRegistry.of(data_dir).users()
    if as_json:
        return json.dumps([{"tenant": u.tenant, "public_key": u.public_key, "seed_file": str(u.seed_file)}
                           for u in users], indent=2)
    if not users:
        return f"no tenants registered in {data_dir / REGISTRY} (`rapport tenants add T`)"
    return "\n".join(f"{u.tenant:<24} {u.public_key}  {u.seed_file}" for u in users)
