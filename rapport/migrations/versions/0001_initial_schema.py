"""initial schema: ingest, scoring and alerts tables

Revision ID: 0001
Revises: 
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alerts_alerts',
    sa.Column('alert_id', sa.String(length=64), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('episode_id', sa.String(length=128), nullable=False),
    sa.Column('clinician_id', sa.String(length=128), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('instrument', sa.String(length=32), nullable=False),
    sa.Column('subscale', sa.String(length=32), nullable=True),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('document', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('alert_id', name=op.f('pk_alerts_alerts'))
    )
    with op.batch_alter_table('alerts_alerts', schema=None) as batch_op:
        batch_op.create_index('ix_alerts_alerts_episode', ['tenant', 'client_id', 'episode_id', 'status'], unique=False)

    op.create_table('alerts_episodes',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('episode_id', sa.String(length=128), nullable=False),
    sa.Column('latest_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('state', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'client_id', 'episode_id', name=op.f('pk_alerts_episodes'))
    )
    op.create_table('alerts_inbox',
    sa.Column('message_id', sa.String(length=200), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('message_id', name=op.f('pk_alerts_inbox'))
    )
    op.create_table('alerts_outbox',
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_alerts_outbox'))
    )
    with op.batch_alter_table('alerts_outbox', schema=None) as batch_op:
        batch_op.create_index('ix_alerts_outbox_created_at', ['created_at'], unique=False)

    op.create_table('alerts_scores',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('submission_id', sa.String(length=128), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('episode_id', sa.String(length=128), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('administered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('document', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'submission_id', name=op.f('pk_alerts_scores'))
    )
    with op.batch_alter_table('alerts_scores', schema=None) as batch_op:
        batch_op.create_index('ix_alerts_scores_episode', ['tenant', 'client_id', 'episode_id', 'administered_at'], unique=False)

    op.create_table('alerts_transitions',
    sa.Column('event_id', sa.String(length=128), nullable=False),
    sa.Column('alert_id', sa.String(length=64), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('transition', sa.String(length=16), nullable=False),
    sa.Column('by', sa.String(length=128), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_alerts_transitions'))
    )
    with op.batch_alter_table('alerts_transitions', schema=None) as batch_op:
        batch_op.create_index('ix_alerts_transitions_alert', ['alert_id', 'at'], unique=False)

    op.create_table('ingest_inbox',
    sa.Column('message_id', sa.String(length=200), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('message_id', name=op.f('pk_ingest_inbox'))
    )
    op.create_table('ingest_outbox',
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_ingest_outbox'))
    )
    with op.batch_alter_table('ingest_outbox', schema=None) as batch_op:
        batch_op.create_index('ix_ingest_outbox_created_at', ['created_at'], unique=False)

    op.create_table('ingest_submissions',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('submission_id', sa.String(length=128), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('instrument', sa.String(length=32), nullable=False),
    sa.Column('accepted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('document', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'submission_id', name=op.f('pk_ingest_submissions'))
    )
    op.create_table('scoring_inbox',
    sa.Column('message_id', sa.String(length=200), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('message_id', name=op.f('pk_scoring_inbox'))
    )
    op.create_table('scoring_outbox',
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_scoring_outbox'))
    )
    with op.batch_alter_table('scoring_outbox', schema=None) as batch_op:
        batch_op.create_index('ix_scoring_outbox_created_at', ['created_at'], unique=False)

    op.create_table('scoring_scores',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('submission_id', sa.String(length=128), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('episode_id', sa.String(length=128), nullable=False),
    sa.Column('instrument', sa.String(length=32), nullable=False),
    sa.Column('administered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('total', sa.Float(), nullable=False),
    sa.Column('document', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'submission_id', name=op.f('pk_scoring_scores'))
    )
    with op.batch_alter_table('scoring_scores', schema=None) as batch_op:
        batch_op.create_index('ix_scoring_scores_series', ['tenant', 'client_id', 'episode_id', 'instrument', 'administered_at'], unique=False)

    op.create_table('scoring_series',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('episode_id', sa.String(length=128), nullable=False),
    sa.Column('instrument', sa.String(length=32), nullable=False),
    sa.Column('baseline_total', sa.Float(), nullable=False),
    sa.Column('baseline_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('latest_submission', sa.String(length=128), nullable=False),
    sa.Column('latest_total', sa.Float(), nullable=False),
    sa.Column('latest_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sessions', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'client_id', 'episode_id', 'instrument', name=op.f('pk_scoring_series'))
    )


def downgrade() -> None:
    op.drop_table('scoring_series')
    with op.batch_alter_table('scoring_scores', schema=None) as batch_op:
        batch_op.drop_index('ix_scoring_scores_series')

    op.drop_table('scoring_scores')
    with op.batch_alter_table('scoring_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_scoring_outbox_created_at')

    op.drop_table('scoring_outbox')
    op.drop_table('scoring_inbox')
    op.drop_table('ingest_submissions')
    with op.batch_alter_table('ingest_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_ingest_outbox_created_at')

    op.drop_table('ingest_outbox')
    op.drop_table('ingest_inbox')
    with op.batch_alter_table('alerts_transitions', schema=None) as batch_op:
        batch_op.drop_index('ix_alerts_transitions_alert')

    op.drop_table('alerts_transitions')
    with op.batch_alter_table('alerts_scores', schema=None) as batch_op:
        batch_op.drop_index('ix_alerts_scores_episode')

    op.drop_table('alerts_scores')
    with op.batch_alter_table('alerts_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_alerts_outbox_created_at')

    op.drop_table('alerts_outbox')
    op.drop_table('alerts_inbox')
    op.drop_table('alerts_episodes')
    with op.batch_alter_table('alerts_alerts', schema=None) as batch_op:
        batch_op.drop_index('ix_alerts_alerts_episode')

    op.drop_table('alerts_alerts')
