"""`rapport evaluate --cohort FILE` as a clinic runs it, on the shipped example (six invented PHQ-9
episodes a clinician labelled): the submissions go through the embedded stack session by session and
each rule is scored against the clinician's judgements, false alarms included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.nats, pytest.mark.e2e]

EXAMPLE = Path(__file__).parents[1] / "fixtures" / "cohorts" / "example.jsonl"


def test_the_example_cohort_is_scored_against_the_clinicians_labels(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RAPPORT_BROKER_URL", "RAPPORT_DATABASE_URL")}
    done = subprocess.run(
        [sys.executable, "-m", "rapport.cli", "evaluate", "--cohort", str(EXAMPLE), "--json", "--data-dir",
         str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert (report["episodes"], report["sessions"], report["labels"], report["rejected_lines"]) == (6, 42, 5, [])
    rules = report["rules"]
    # Ada's item 9 at session 3 is seen at session 3
    risk = rules["critical_item"]
    assert (risk["precision"], risk["recall"], risk["median_lead_sessions"]) == (1.0, 1.0, 0)
    # Bo, whom the clinician saw worse at session 4, is flagged a session later (9 to 16 at session 5);
    # Eli's one bad week (12 to 18, back to 11) is a possible sudden loss nobody judged alert-worthy
    worse = rules["reliable_deterioration"]
    assert (worse["labelled"], worse["flagged"], worse["precision"], worse["recall"]) == (1, 2, 0.5, 1.0)
    assert worse["median_lead_sessions"] == -1 and worse["unlabelled_by_finding"] == {"Possible sudden loss": 1}
    # Bo, Cy and Fay (labelled at her week-6 review, by time) are found at the checkpoint; Ada, 17 to 12
    # by session 6 and judged to be improving, is flagged too
    checkpoint = rules["not_on_track"]
    assert (checkpoint["labelled"], checkpoint["flagged"], checkpoint["precision"], checkpoint["recall"]) == (
        3, 4, 0.75, 1.0)
    assert checkpoint["median_lead_sessions"] == 0 and checkpoint["median_lead_days"] == -0.1
    # no history cohort, so no fit: the expected-trajectory rule cannot speak, and its recall says so
    trajectory = rules["expected_trajectory"]
    assert report["fits"] == [] and (trajectory["flagged"], trajectory["recall"]) == (0, 0.0)
    assert report["all_alerts_per_100_sessions"] == round(100 * 7 / 42, 2)
