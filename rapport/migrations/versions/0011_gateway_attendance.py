"""placeholder for the gateway's attendance migration, so 0012 has its parent

Another change owns 0011; this empty revision keeps the history linear until theirs lands (theirs
replaces this file).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
