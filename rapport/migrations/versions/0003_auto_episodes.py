"""episodes made by the gap rule for submissions that name none

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('scoring_auto_episodes',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('episode_id', sa.String(length=128), nullable=False),
    sa.Column('first_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'client_id', 'episode_id', name=op.f('pk_scoring_auto_episodes'))
    )


def downgrade() -> None:
    op.drop_table('scoring_auto_episodes')
