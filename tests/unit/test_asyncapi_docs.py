"""The AsyncAPI documents in docs/asyncapi are what `rapport docs` generates from the code today."""

from __future__ import annotations

from pathlib import Path

from rapport.asyncapi import SERVICES, write_asyncapi

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "asyncapi"


def test_the_committed_asyncapi_documents_match_the_code(tmp_path: Path) -> None:
    written = write_asyncapi(tmp_path)
    assert [p.name for p in written] == [f"{s}.json" for s in SERVICES]
    for path in written:
        assert path.read_text() == (COMMITTED / path.name).read_text(), f"run `rapport docs`: {path.name} is stale"
