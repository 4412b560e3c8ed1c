"""`INSERT … ON CONFLICT` (do nothing, or update) that compiles on both dialects."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from rapport.shared.db.engine import is_postgres


def insert_ignoring_conflicts(session: AsyncSession, table: Table, index_elements: Sequence[str]) -> Any:
    dialect = postgresql if is_postgres(session) else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=list(index_elements))


def upsert(session: AsyncSession, table: Table, index_elements: Sequence[str], *,
           only_if: Callable[[Any], ColumnElement[bool]] | None = None, kept_if_null: Sequence[str] = ()) -> Any:
    """Insert, or else update every other column from the new row; with `only_if`, only where it
    holds (it is given the new row, `excluded`, to compare with the stored one). A column in
    `kept_if_null` keeps its stored value when the new row has none."""
    dialect = postgresql if is_postgres(session) else sqlite
    statement = dialect.insert(table)
    columns = [c.name for c in table.columns if c.name not in index_elements]
    values = {c: func.coalesce(statement.excluded[c], table.c[c]) if c in kept_if_null else statement.excluded[c]
              for c in columns}
    return statement.on_conflict_do_update(
        index_elements=list(index_elements), set_=values, where=only_if(statement.excluded) if only_if else None,
    )
