"""`rapport evaluate --cohort FILE` refuses a bad file with its line and field before any stack starts,
and `--curves --write` writes the recovery-curve cohort as a file `--cohort` reads back."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

import rapport.evaluate
from rapport.cli import app
from rapport.labelled_cohort import FORMAT, read_cohort


class NoStack:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("a stack was started for a file that should have been refused")


def test_a_bad_cohort_file_is_refused_by_line_and_field_and_nothing_runs(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rapport.evaluate, "Stack", NoStack)
    cohort = tmp_path / "clinic.jsonl"
    cohort.write_text("\n".join([
        json.dumps({"format": FORMAT}),
        json.dumps({"label": {"alert_kind": "not_on_track", "client_id": "c-1", "episode_id": "c-1-e1",
                              "session": "six"}}),
    ]) + "\n")
    result = CliRunner().invoke(app, ["evaluate", "--cohort", str(cohort)])
    assert result.exit_code == 2
    assert "line 2, label.session: a whole number of 0 or more" in result.stderr
    assert result.stdout == ""


def test_the_curve_cohort_is_written_as_a_labelled_cohort_file(tmp_path: Path) -> None:
    written = tmp_path / "curves.jsonl"
    result = CliRunner().invoke(app, ["evaluate", "--curves", "--clients", "10", "--seed", "2",
                                      "--write", str(written)])
    assert result.exit_code == 0, result.output
    cohort = read_cohort(written.read_text().splitlines(), now=datetime.now(UTC))
    assert cohort.sessions == 120 and "10 synthetic clients, seed 2" in (cohort.description or "")
