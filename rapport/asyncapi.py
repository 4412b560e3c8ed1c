"""`rapport docs`: the AsyncAPI document of each service, generated from the code."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from rapport.shared.settings import Settings

SERVICES = ("ingest", "scoring", "alerts")


def write_asyncapi(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    settings = Settings(database_url="sqlite+aiosqlite:///:memory:")
    for name in SERVICES:
        _runtime, asgi = importlib.import_module(f"rapport.services.{name}.app").build(settings, "nats://127.0.0.1:4222")
        path = out_dir / f"{name}.json"
        # keys sorted: FastStream's order varies between runs, and the files are reviewed as diffs
        document = json.loads(asgi.schema.to_specification().to_json())
        path.write_text(json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
        written.append(path)
    return written
