"""appointments and encounters in the longitudinal record (issue 15)

`ingest_attendance`: the latest state of each appointment ingest accepted (an Attendance document),
with the source's recorded_at and version that order its states. `alerts_attendance`: the alerts
service's own copy, placed in an episode, for the disengagement rules. Neither holds free text.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ingest_attendance',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('appointment_id', sa.String(length=128), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('version', sa.BigInteger(), nullable=True),
    sa.Column('accepted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('document', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'appointment_id', name=op.f('pk_ingest_attendance'))
    )
    op.create_table('alerts_attendance',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('appointment_id', sa.String(length=128), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('episode_id', sa.String(length=128), nullable=True),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('start', sa.DateTime(timezone=True), nullable=True),
    sa.Column('document', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'appointment_id', name=op.f('pk_alerts_attendance'))
    )
    with op.batch_alter_table('alerts_attendance', schema=None) as batch_op:
        batch_op.create_index('ix_alerts_attendance_episode', ['tenant', 'client_id', 'episode_id', 'start'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('alerts_attendance', schema=None) as batch_op:
        batch_op.drop_index('ix_alerts_attendance_episode')

    op.drop_table('alerts_attendance')
    op.drop_table('ingest_attendance')
