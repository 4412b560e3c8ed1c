"""The figures of each fault test, summed up after the run (they are printed as they come with -s)."""

from __future__ import annotations

import pytest
from rig import FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("faults survived")
    terminalreporter.write_line(
        f"{'fault':<22} {'subs':>5} {'fault s':>7} {'recovered s':>11} {'not ready s (i/s/a)':>20} "
        f"{'outbox max (i/s/a)':>19} {'re-placed':>9} {'total s':>7}")
    for f in FIGURES:
        not_ready = "/".join(f"{v:g}" for v in f["not_ready_s"].values())
        outbox = "/".join(str(v) for v in f["outbox_max"].values())
        terminalreporter.write_line(
            f"{f['test']:<22} {f['submissions']:>5} {f['fault_s']:>7} {f['recovered_s']:>11} {not_ready:>20} "
            f"{outbox:>19} {f['re_placed_evaluations']:>9} {f['total_s']:>7}")
