"""A long run on PostgreSQL through the three services (issue 8): SUBMISSIONS native submissions at a
steady rate with a bounded backlog, sampling every few seconds each service's resident memory, the
database's connections and the outbox sizes. After the warm-up nothing may grow without bound, and
at the end every submission is evaluated exactly once.

RAPPORT_SOAK_SUBMISSIONS and RAPPORT_SOAK_RATE override the size and the rate of the run."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from rig import (
    SERVICES,
    SOAK_FIGURES,
    Ledger,
    Load,
    Sampler,
    eventually,
    log,
    median,
    pipeline,
    rss_mb,
    synthetic_submissions,
)

from rapport.shared.messaging import subjects

pytestmark = pytest.mark.soak

SUBMISSIONS = int(os.environ.get("RAPPORT_SOAK_SUBMISSIONS", "100000"))
RATE = float(os.environ.get("RAPPORT_SOAK_RATE", "400"))  # per second; the pipeline does 300-600 here
BACKLOG = 2000  # at most this many published and not yet evaluated
# every 5 s, more often for a short run (an override), so that the steady part has samples enough
SAMPLE_SECONDS = max(1.0, min(5.0, SUBMISSIONS / RATE / 30))
WARM_UP = 0.2  # of the submissions evaluated
RSS_GROWTH = 1.25  # of each service's median after the warm-up
# each service's engine: pool_size 10 + max_overflow 10 (shared/db/engine.py)
CONNECTIONS_PER_SERVICE = 20
OUTBOX_BOUND = 2000  # rows per outbox: a few batches in flight, never a backlog
# the defaults but for the log level: a long run, not a fault
SOAK_SETTINGS = {"RAPPORT_LOG_LEVEL": "WARNING"}


async def test_a_long_run_grows_nothing_and_evaluates_every_submission_once(
    tmp_path: Path, postgres_admin_url: str
) -> None:
    began = time.monotonic()
    submissions = synthetic_submissions(SUBMISSIONS, sessions=12)
    async with pipeline(tmp_path, postgres_admin_url, with_proxy=False, settings=SOAK_SETTINGS) as p:
        ledger = Ledger(p.broker_url, p.tenant, submissions, only="evaluation.completed")
        await ledger.start()
        load = Load(p.broker_url, p.tenant, submissions, rate=RATE, in_flight=128, backlog=BACKLOG, ledger=ledger)
        sampler = Sampler(p.database, p.services, interval=SAMPLE_SECONDS, resources=True)
        sampler.progress = lambda: {"published": load.acked, "evaluated": ledger.evaluated,
                                    "rss_nats": rss_mb(p.nats.process.pid) if p.nats.process else None}
        await sampler.start()
        started = time.monotonic()
        sending = asyncio.create_task(load.run())
        try:
            await ledger.wait_evaluated(SUBMISSIONS, max(900.0, SUBMISSIONS / 50))
            evaluated_in = time.monotonic() - started
            await sending
            await eventually(lambda: p.quiet(sampler, ledger), 120, "no work left anywhere")
            rows = await p.rows(sampler)
            dead_letters = await p.stream_messages(subjects.DEADLETTER_STREAM)
        finally:
            if not sending.done():
                sending.cancel()
            await sampler.stop()
            await ledger.stop()

        steady = [s for s in sampler.samples if s["evaluated"] >= WARM_UP * SUBMISSIONS
                  and s["published"] < SUBMISSIONS]
        figures = summarise(sampler.samples, steady, evaluated_in, time.monotonic() - began, ledger)
        SOAK_FIGURES.append(figures)
        log(f"soak: {figures}")
        assert len(steady) >= 3, f"only {len(steady)} samples after the warm-up"
        assert ledger.problems(checks=("evaluated",)) == []
        assert dead_letters == 0
        assert rows == {"ingest_submissions": SUBMISSIONS, "scoring_scores": SUBMISSIONS,
                        "alerts_scores": SUBMISSIONS}
        for service, process in p.services.items():
            assert process.alive and process.starts == 1, f"{service} restarted or exited:\n{process.log_tail()}"
        for service in SERVICES:
            rss = figures["rss_mb"][service]
            assert rss["max"] <= RSS_GROWTH * rss["median"], f"{service} resident memory grew: {rss}"
        assert figures["connections_max"] <= CONNECTIONS_PER_SERVICE * len(SERVICES)
        for service, rows_max in figures["outbox_max"].items():
            assert rows_max <= OUTBOX_BOUND, f"{service} outbox reached {rows_max} rows"
        assert steady_outbox_flat(steady), "an outbox grew through the run"


def summarise(samples: list[dict[str, Any]], steady: list[dict[str, Any]], evaluated_in: float, total: float,
              ledger: Ledger) -> dict[str, Any]:
    def rss(name: str) -> dict[str, float | None]:
        values = [s[f"rss_{name}"] for s in steady if s.get(f"rss_{name}") is not None]
        return {"first": samples[0].get(f"rss_{name}") if samples else None,
                "after_warm_up": values[0] if values else None, "median": median(values),
                "max": max(values, default=0.0), "last": values[-1] if values else None}

    return {
        "submissions": SUBMISSIONS, "rate_requested": RATE, "evaluated_in_s": round(evaluated_in, 1),
        "throughput_per_s": round(SUBMISSIONS / evaluated_in, 1), "total_s": round(total, 1),
        "samples": len(samples), "steady_samples": len(steady),
        "rss_mb": {name: rss(name) for name in (*SERVICES, "nats")},
        "connections_max": max((s["connections"] for s in samples), default=0),
        "connections_median": median([s["connections"] for s in steady]),
        "outbox_max": {t.split("_")[0]: max((s[t] for s in samples), default=0)
                       for t in ("ingest_outbox", "scoring_outbox", "alerts_outbox")},
        "backlog_max": max((s["published"] - s["evaluated"] for s in samples), default=0),
        "re_placed_evaluations": ledger.re_placed_evaluations(),
    }


def steady_outbox_flat(steady: list[dict[str, Any]]) -> bool:
    """The outbox rows of the last third of the steady samples are no more than those of the first
    third, give or take a few batches."""
    third = max(1, len(steady) // 3)
    for table in ("ingest_outbox", "scoring_outbox", "alerts_outbox"):
        early, late = median([s[table] for s in steady[:third]]), median([s[table] for s in steady[-third:]])
        if late > 2 * early + 300:
            return False
    return True
