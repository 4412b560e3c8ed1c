"""The deploy profiles say what an acknowledgement means: one node syncs every write
(`sync_interval: always`), the R3 cluster an explicit interval, stated with its trade-off; the
compose file runs each node from its profile's file and tells the services the same policy."""

from __future__ import annotations

import re
from pathlib import Path

from rapport.embedded_nats import SYNC_PATTERN, sync_interval_ns

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def settings_of(path: Path) -> dict[str, str]:
    """`key: value` lines of a nats-server config (comments dropped, quotes stripped, blocks
    flattened: enough for these files)."""
    found: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if ":" in line and not line.endswith("{"):
            key, value = (part.strip() for part in line.split(":", 1))
            found[key] = value.strip('"')
    return found


def comments_of(path: Path) -> str:
    return " ".join(line.strip().lstrip("#").strip() for line in path.read_text().splitlines()
                    if line.strip().startswith("#"))


def service_block(compose: str, name: str) -> str:
    """The lines of one service in compose.yaml (two-space indented keys under `services:`)."""
    lines = compose.splitlines()
    start = lines.index(f"  {name}:")
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^ {0,2}\S", lines[i])), len(lines))
    return "\n".join(lines[start:end])


def test_single_node_syncs_every_write() -> None:
    single = settings_of(DEPLOY / "nats" / "single.conf")
    assert single["sync_interval"] == "always"
    assert single["store_dir"] == "/data"
    assert not re.search(r"^\s*cluster\s*\{", (DEPLOY / "nats" / "single.conf").read_text(), re.MULTILINE)


def test_the_cluster_states_an_explicit_interval_and_its_trade_off() -> None:
    path = DEPLOY / "nats" / "cluster.conf"
    cluster = settings_of(path)
    interval = cluster["sync_interval"]
    assert interval != "always" and SYNC_PATTERN.match(interval)
    # a duration in nats config must be quoted: unquoted `10s` would not read as 10 seconds
    assert re.search(rf'^\s*sync_interval:\s*"{interval}"\s*$', path.read_text(), re.MULTILINE)
    assert sync_interval_ns(interval) <= 60 * 10**9, "more than a minute of acknowledged writes at risk"
    assert cluster["name"] == "rapport" and cluster["store_dir"] == "/data"
    text = comments_of(path).lower()
    assert "r3" in text and "power failure" in text and "crash" in text


def test_compose_runs_each_node_from_its_profile_and_tells_the_services() -> None:
    compose = (DEPLOY / "compose.yaml").read_text()
    for node in ("nats-1", "nats-2", "nats-3"):
        block = service_block(compose, node)
        assert '"-c", "/etc/nats/cluster.conf"' in block and f'"--name", "{node}"' in block, node
        assert "./nats/cluster.conf:/etc/nats/cluster.conf:ro" in block, node
    single = service_block(compose, "nats")
    assert "profiles: [single]" in single and "./nats/single.conf:/etc/nats/single.conf:ro" in single
    # the services' RAPPORT_BROKER_SYNC defaults to the cluster's interval, as /readyz reports it
    cluster_interval = settings_of(DEPLOY / "nats" / "cluster.conf")["sync_interval"]
    assert f"RAPPORT_BROKER_SYNC: ${{RAPPORT_BROKER_SYNC:-{cluster_interval}}}" in compose
