"""the gateway's read models of alerts, their transitions and the scores (issue 11 item 2)

`gateway_alerts` holds each alert as its latest transition left it (with the headline and evidence
in words the alerts service published), `gateway_alert_transitions` every transition (who, when,
why), `gateway_scores` each score's latest revision with its change figures, never the responses.
Fed by the alert.* and score.computed events; the gateway reads no other service's tables.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('gateway_alert_transitions',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('alert_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('transition', sa.String(length=16), nullable=False),
    sa.Column('by', sa.String(length=128), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'alert_id', 'version', 'transition', name=op.f('pk_gateway_alert_transitions'))
    )
    op.create_table('gateway_alerts',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('alert_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('urgency', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('episode_id', sa.String(length=128), nullable=False),
    sa.Column('clinician_id', sa.String(length=128), nullable=True),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('headline', sa.Text(), nullable=False),
    sa.Column('evidence_words', sa.Text(), nullable=False),
    sa.Column('alert', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'alert_id', name=op.f('pk_gateway_alerts'))
    )
    with op.batch_alter_table('gateway_alerts', schema=None) as batch_op:
        batch_op.create_index('ix_gateway_alerts_clinician', ['tenant', 'clinician_id'], unique=False)
        batch_op.create_index('ix_gateway_alerts_episode', ['tenant', 'client_id', 'episode_id'], unique=False)
        batch_op.create_index('ix_gateway_alerts_worklist', ['tenant', 'status', 'urgency', 'opened_at'], unique=False)

    op.create_table('gateway_scores',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('submission_id', sa.String(length=128), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('episode_id', sa.String(length=128), nullable=False),
    sa.Column('clinician_id', sa.String(length=128), nullable=True),
    sa.Column('instrument', sa.String(length=32), nullable=False),
    sa.Column('administered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('session_number', sa.Integer(), nullable=True),
    sa.Column('total', sa.Float(), nullable=False),
    sa.Column('score', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'submission_id', name=op.f('pk_gateway_scores'))
    )
    with op.batch_alter_table('gateway_scores', schema=None) as batch_op:
        batch_op.create_index('ix_gateway_scores_episode', ['tenant', 'client_id', 'episode_id', 'administered_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('gateway_scores', schema=None) as batch_op:
        batch_op.drop_index('ix_gateway_scores_episode')

    op.drop_table('gateway_scores')
    with op.batch_alter_table('gateway_alerts', schema=None) as batch_op:
        batch_op.drop_index('ix_gateway_alerts_worklist')
        batch_op.drop_index('ix_gateway_alerts_episode')
        batch_op.drop_index('ix_gateway_alerts_clinician')

    op.drop_table('gateway_alerts')
    op.drop_table('gateway_alert_transitions')
