"""The AsyncAPI documents in docs/asyncapi and the gateway's OpenAPI document in docs/openapi are what
`rapport docs` generates from the code today."""

from __future__ import annotations

import json
from pathlib import Path

from rapport.asyncapi import SERVICES, write_asyncapi, write_openapi

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "asyncapi"
OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi"


def test_the_committed_asyncapi_documents_match_the_code(tmp_path: Path) -> None:
    written = write_asyncapi(tmp_path)
    assert [p.name for p in written] == [f"{s}.json" for s in SERVICES]
    for path in written:
        assert path.read_text() == (COMMITTED / path.name).read_text(), f"run `rapport docs`: {path.name} is stale"


def test_the_committed_gateway_openapi_document_matches_the_routes(tmp_path: Path) -> None:
    written = write_openapi(tmp_path)
    assert written.read_text() == (OPENAPI / "gateway.json").read_text(), "run `rapport docs`: gateway.json is stale"
    paths = json.loads(written.read_text())["paths"]
    assert {"/fhir/subscription-hook/{subscription_id}", "/api/v1/alerts", "/api/v1/submissions"} <= set(paths)
