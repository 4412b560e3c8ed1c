"""`rapport evaluate --json` writes only JSON on stdout: the stack's startup lines go to stderr."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import rapport.evaluate
from rapport.cli import app
from rapport.shared.settings import Settings
from rapport.stack import Stack


def test_the_stacks_lines_go_where_it_is_told(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    told = io.StringIO()
    Stack(Settings(data_dir=tmp_path), banner=told).say("broker    nats://127.0.0.1:1")
    assert told.getvalue() == "broker    nats://127.0.0.1:1\n" and capsys.readouterr().out == ""
    Stack(Settings(data_dir=tmp_path)).say("durability  ...")  # `rapport up`: stdout as before
    assert capsys.readouterr().out == "durability  ...\n"


class FakeStack:
    """Stands in for the embedded stack: says its lines on the banner it was given, as Stack.start does."""

    def __init__(self, settings: Settings, *, banner: Any = None) -> None:
        self.banner, self.broker_url, self.database_urls = banner, "nats://test", {"alerts": "sqlite+aiosqlite://"}

    def __enter__(self) -> FakeStack:
        print("broker    nats://test  (embedded)", file=self.banner or sys.stdout)
        return self

    def client_settings(self, tenant: str | None = None) -> Settings:
        return Settings()

    def __exit__(self, *exc: object) -> None:
        print("stopped", file=self.banner or sys.stdout)


def test_evaluate_json_is_only_json_on_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    async def evaluated(*args: object) -> dict[str, Any]:
        return {"tenant": "t", "rules": {}, "fits": [], "clients": 1, "history_clients": 1, "administrations": 1,
                "alert_latency_ms": None}

    for name in ("RAPPORT_LICENSED_INSTRUMENTS", "RAPPORT_TRAJECTORY_REFRESH_SECONDS"):  # set by the run: restored
        monkeypatch.setenv(name, "")
    monkeypatch.setattr(rapport.evaluate, "Stack", FakeStack)
    monkeypatch.setattr(rapport.evaluate, "_evaluate", evaluated)
    result = CliRunner().invoke(app, ["evaluate", "--json", "--clients", "1", "--history-clients", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tenant"] == "t"  # the whole of stdout parses
    assert "broker" in result.stderr and "stopped" in result.stderr
