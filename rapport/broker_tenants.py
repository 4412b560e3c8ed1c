"""A broker user per tenant, for clinic systems (issue 16 item 2, first part): `rapport broker tenant-user T`.

A clinic system signed in as tenant T may publish only to `rapport.T.in.>` (submissions, attendance,
alert commands) and subscribe only to `rapport.T.>` (the answers and events about its own tenant)
and to its own inboxes, `_INBOX_T.>`, where JetStream's acknowledgements of its publishes arrive.
Everything else (another tenant's subjects, the services' inboxes, which carry the messages the
services pull, the JetStream API) is refused by the server. The services keep their own user with
every permission.

The user is an NKey: the seed (the secret) is written to a file readable by its owner only and given
to the clinic system (RAPPORT_BROKER_NKEY_SEED_FILE, and RAPPORT_BROKER_INBOX_PREFIX=_INBOX_T for
Rapport's own clients); the public key and the permissions go into the server's `authorization`
block, printed here. Nothing is sent to the broker: installing the block is the operator's step (a
config reload: `nats-server --signal reload`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import nkeys

from rapport.shared.contracts.tenancy import is_tenant_id
from rapport.shared.messaging.subjects import PREFIX


def inbox_prefix(tenant: str) -> str:
    return f"_INBOX_{tenant}"


def permissions(tenant: str) -> dict[str, dict[str, list[str]]]:
    return {
        "publish": {"allow": [f"{PREFIX}.{tenant}.in.>"]},
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


def create_tenant_user(tenant: str, directory: Path) -> TenantUser:
    """A new NKey user for `tenant`, its seed in `<directory>/<tenant>.nk` (0600); an existing seed is
    kept (replacing it would lock the clinic system out), and its user described again."""
    if not is_tenant_id(tenant):
        raise ValueError(f"{tenant!r} is not a tenant id ([a-z0-9_-], 1 to 64 characters)")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{tenant}.nk"
    if not path.exists():
        seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, seed + b"\n")
        finally:
            os.close(fd)
    seed = bytearray(path.read_bytes().strip())
    public = nkeys.from_seed(seed).public_key.decode()
    return TenantUser(tenant, public, path)


def tenant_user_command(tenant: str, directory: Path) -> str:
    user = create_tenant_user(tenant, directory)
    return "\n".join([
        f"tenant {tenant}: seed {user.seed_file} (mode 0600; give it to the clinic system, nothing else needs it)",
        "",
        "add to the broker's authorization block, beside the services' user, then reload the server:",
        "  authorization {",
        "    users = [",
        "      # ... the services' user, with every permission",
        f"      {user.config_entry()}",
        "    ]",
        "  }",
        "",
        "the clinic system connects with that seed; Rapport's clients (rapport submit) with:",
        f"  RAPPORT_BROKER_NKEY_SEED_FILE={user.seed_file} RAPPORT_BROKER_INBOX_PREFIX={inbox_prefix(tenant)}",
        f"it may publish to {PREFIX}.{tenant}.in.> and subscribe to {PREFIX}.{tenant}.> and "
        f"{inbox_prefix(tenant)}.>, nothing else",
    ])
