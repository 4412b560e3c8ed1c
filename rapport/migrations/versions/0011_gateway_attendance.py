"""the gateway's read model of each episode's attendance (issue 15 item 2, over HTTP)

`gateway_attendance` holds each episode's attendance summary as the alerts service last published it
in `attendance.recorded` (sessions attended, missed, cancelled and cancelled late, the gap since the
last attended session, the ending: planned, unplanned or open), for the record API. The newest
summary wins. Counts, ids and times only.

This file replaces the empty placeholder 0011 that let 0012 be written first: a database migrated
while the placeholder stood is stamped past 0011 without this table (development data dirs only;
recreate them, or create the table by hand as below).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('gateway_attendance',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('episode_id', sa.String(length=128), nullable=False),
    sa.Column('as_of', sa.DateTime(timezone=True), nullable=False),
    sa.Column('summary', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'client_id', 'episode_id', name=op.f('pk_gateway_attendance'))
    )


def downgrade() -> None:
    op.drop_table('gateway_attendance')
