"""`rapport docs`: the AsyncAPI document of each service and the gateway's OpenAPI document,
generated from the code."""

from __future__ import annotations

import importlib
import json
import tempfile
from pathlib import Path
from typing import Any

from rapport.shared.settings import Settings

SERVICES = ("ingest", "scoring", "alerts")


def _write(path: Path, document: Any) -> Path:
    # keys sorted: FastStream's order varies between runs, and the files are reviewed as diffs
    path.write_text(json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return path


def write_asyncapi(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    settings = Settings(database_url="sqlite+aiosqlite:///:memory:")
    for name in SERVICES:
        _runtime, asgi = importlib.import_module(f"rapport.services.{name}.app").build(settings, "nats://127.0.0.1:4222")
        written.append(_write(out_dir / f"{name}.json", json.loads(asgi.schema.to_specification().to_json())))
    return written


def write_openapi(out_dir: Path) -> Path:
    """The gateway's HTTP routes (the document it serves at /api/v1/openapi.json), built with a
    throwaway signing key and secrets key: nothing of either is in the document."""
    from rapport.services.gateway.app import build
    from rapport.services.gateway.notifications.sealing import new_key_text
    from rapport.services.gateway.tokens import create_signing_key

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        key, secrets = Path(scratch) / "signing-key.pem", Path(scratch) / "secrets.key"
        create_signing_key(key)
        secrets.write_text(new_key_text())
        settings = Settings(database_url="sqlite+aiosqlite:///:memory:", token_key_file=key, secrets_key_file=secrets,
                            data_dir=Path(scratch))
        _runtime, asgi = build(settings, "nats://127.0.0.1:4222")
        return _write(out_dir / "gateway.json", asgi.http.openapi())
