"""The soak test drives the services with the fault suite's harness (tests/faults/rig.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

FAULTS = str(Path(__file__).resolve().parent.parent / "faults")
if FAULTS not in sys.path:
    sys.path.insert(0, FAULTS)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from rig import SOAK_FIGURES

    for f in SOAK_FIGURES:
        write = terminalreporter.write_line
        terminalreporter.section("soak")
        write(f"{f['submissions']} submissions evaluated in {f['evaluated_in_s']} s ({f['throughput_per_s']}/s, "
              f"{f['rate_requested']:g}/s asked), whole test {f['total_s']} s")
        for name, rss in f["rss_mb"].items():
            write(f"  rss {name:<8} MB: start {rss['first']}, after warm-up {rss['after_warm_up']}, "
                  f"median {rss['median']}, max {rss['max']}, last {rss['last']}")
        write(f"  connections: max {f['connections_max']}, median {f['connections_median']}; "
              f"outbox max {f['outbox_max']}; backlog max {f['backlog_max']}; "
              f"re-placed evaluations {f['re_placed_evaluations']}")
