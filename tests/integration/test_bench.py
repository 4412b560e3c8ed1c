"""`rapport bench --embedded --baseline` as a user runs it: the pipeline and the bare three-hop
pipeline each take every submission of the same load, and the share between them is reported.
(Figures are measured by the command, never asserted: this checks that it measures.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_bench_with_the_baseline_completes_both_loads_and_reports_their_share(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RAPPORT_BROKER_URL", "RAPPORT_DATABASE_URL")}
    result = subprocess.run(
        [sys.executable, "-m", "rapport.cli", "bench", "--embedded", "--baseline", "-n", "120", "--episodes", "30",
         "--json", "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert (report["completed"], report["baseline"]["completed"]) == (120, 120)
    assert report["share_of_baseline"] == round(report["throughput_per_s"] / report["baseline"]["throughput_per_s"], 2)
    assert set(report["baseline"]["cpu_ms_per_submission"]) == {"hop1", "hop2", "hop3"}
    assert report["latency_ms"]["p99"] is not None and report["baseline"]["latency_ms"]["p99"] is not None
    hops = report["hop_latency_ms"]
    assert set(hops) == {"ingest", "scoring", "alerts"} and all(hops[hop]["p50"] > 0 for hop in hops)
    # the three hops are the whole journey: their means add up to its mean (to the rounding)
    assert abs(sum(hops[hop]["mean"] for hop in hops) - report["latency_ms"]["mean"]) < 0.5
