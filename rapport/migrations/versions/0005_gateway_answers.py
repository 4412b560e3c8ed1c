"""the gateway's tables: ingest's answers as HTTP callers are told them, and its inbox and outbox

`gateway_answers` holds one row per answered part of an inbound message (keyed by a digest of the
tenant and the message id, like the inboxes), so a resend over HTTP is answered as the first
request was. It holds ids, codes and the problems' words, never submitted values; rows older than
the inboxes' retention are pruned.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('gateway_answers',
    sa.Column('message_key', sa.String(length=64), nullable=False),
    sa.Column('part', sa.Integer(), nullable=False),
    sa.Column('parts', sa.Integer(), nullable=False),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('answer', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('message_key', 'part', name=op.f('pk_gateway_answers'))
    )
    with op.batch_alter_table('gateway_answers', schema=None) as batch_op:
        batch_op.create_index('ix_gateway_answers_answered_at', ['answered_at'], unique=False)

    op.create_table('gateway_inbox',
    sa.Column('message_key', sa.String(length=64), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('message_key', name=op.f('pk_gateway_inbox'))
    )
    op.create_table('gateway_outbox',
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('available_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_gateway_outbox'))
    )
    with op.batch_alter_table('gateway_outbox', schema=None) as batch_op:
        batch_op.create_index('ix_gateway_outbox_available_at', ['available_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('gateway_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_gateway_outbox_available_at')

    op.drop_table('gateway_outbox')
    op.drop_table('gateway_inbox')
    with op.batch_alter_table('gateway_answers', schema=None) as batch_op:
        batch_op.drop_index('ix_gateway_answers_answered_at')

    op.drop_table('gateway_answers')
