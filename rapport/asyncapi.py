"""`rapport docs`: the AsyncAPI document of each service, generated from the code."""

from __future__ import annotations

import importlib
from pathlib import Path

from shared.settings import Settings

SERVICES = ("ingest", "scoring", "alerts")


def write_asyncapi(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    settings = Settings(database_url="sqlite+aiosqlite:///:memory:")
    for name in SERVICES:
        _runtime, asgi = importlib.import_module(f"services.{name}.app").build(settings, "nats://127.0.0.1:4222")
        path = out_dir / f"{name}.json"
        path.write_text(asgi.schema.to_specification().to_json())
        written.append(path)
    return written
