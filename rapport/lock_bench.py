"""`rapport db bench-locks`: how long a writer waits for an SQLite file's one write lock while other
processes commit, with SQLite's own busy handler and with the tries of `begin_immediate` (what the
embedded stack's services do), in one run on the same disk.

Each process commits `count` small transactions (BEGIN IMMEDIATE, an insert, a millisecond of work
holding the lock, a synced COMMIT) at about `rate` a second, as the services of one stack do."""

from __future__ import annotations

import multiprocessing
import os
import random
import sqlite3
import tempfile
import time
from pathlib import Path

from rapport.shared.db.engine import DEFAULT_STATEMENT_TIMEOUT_SECONDS, begin_immediate

HANDLERS = ("sqlite", "rapport")


def _writer(path: str, handler: str, count: int, rate: float, seed: int) -> list[float]:
    chance = random.Random(seed)
    connection = sqlite3.connect(path, isolation_level=None, timeout=DEFAULT_STATEMENT_TIMEOUT_SECONDS)
    connection.execute("PRAGMA synchronous=FULL")
    waits = []
    try:
        for _ in range(count):
            asked = time.perf_counter()
            if handler == "rapport":
                begin_immediate(connection, DEFAULT_STATEMENT_TIMEOUT_SECONDS)
            else:
                connection.execute("BEGIN IMMEDIATE")
            waits.append((time.perf_counter() - asked) * 1000)
            connection.execute("INSERT INTO t (v) VALUES (?)", (os.urandom(200),))
            time.sleep(0.001)
            connection.execute("COMMIT")
            time.sleep(chance.expovariate(rate))
    finally:
        connection.close()
    return waits


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def measure(handler: str, *, processes: int, count: int, rate: float, directory: Path) -> dict[str, float]:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"locks-{handler}.db"
    with sqlite3.connect(path) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        runs = pool.starmap(_writer, [(str(path), handler, count, rate, seed) for seed in range(processes)])
    elapsed = time.perf_counter() - started
    waits = sorted(w for run in runs for w in run)
    return {"commits_per_second": round(len(waits) / elapsed, 1), "p50_ms": round(_percentile(waits, 0.5), 2),
            "p90_ms": round(_percentile(waits, 0.9), 2), "p99_ms": round(_percentile(waits, 0.99), 2),
            "max_ms": round(waits[-1], 2)}


def run(*, processes: int, count: int, rate: float, rounds: int) -> list[dict[str, object]]:
    """The two handlers in turn, `rounds` times each, each on a fresh file."""
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="rapport-locks-") as directory:
        for round_number in range(rounds):
            for handler in HANDLERS:
                figures = measure(handler, processes=processes, count=count, rate=rate,
                                  directory=Path(directory) / f"{round_number}")
                results.append({"handler": handler, "round": round_number + 1, **figures})
    return results


def lines(results: list[dict[str, object]]) -> list[str]:
    out = [f"{'handler':<8} {'round':>5} {'commits/s':>10} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7}"]
    out += [f"{r['handler']:<8} {r['round']:>5} {r['commits_per_second']:>10} {r['p50_ms']:>7} {r['p90_ms']:>7} "
            f"{r['p99_ms']:>7} {r['max_ms']:>7}" for r in results]
    return out
