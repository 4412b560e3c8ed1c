"""`INSERT … ON CONFLICT DO NOTHING` that compiles on both dialects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.engine import is_postgres


def insert_ignoring_conflicts(session: AsyncSession, table: Table, index_elements: Sequence[str]) -> Any:
    dialect = postgresql if is_postgres(session) else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=list(index_elements))
