"""webhook endpoints, e-mail subscriptions and delivery attempts (issue 11 item 5)

`gateway_webhook_endpoints` and `gateway_email_subscriptions` are the targets a tenant's admin (for
the tenant, or for one clinician) or a clinician (for themselves) set up; `gateway_deliveries` is
the outbox of deliveries, one per notify event per matching target, its id the Standard Webhooks
`webhook-id`; `gateway_delivery_attempts` keeps every try. No foreign keys: deleting a target deletes
its deliveries and attempts in the same transaction (services/gateway/notifications/repository.py).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('gateway_webhook_endpoints',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('clinician_id', sa.String(length=128), nullable=True),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('description', sa.String(length=200), nullable=False),
    sa.Column('secret', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gateway_webhook_endpoints'))
    )
    with op.batch_alter_table('gateway_webhook_endpoints', schema=None) as batch_op:
        batch_op.create_index('ix_gateway_webhook_endpoints_tenant', ['tenant', 'clinician_id'], unique=False)

    op.create_table('gateway_email_subscriptions',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('clinician_id', sa.String(length=128), nullable=True),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gateway_email_subscriptions'))
    )
    with op.batch_alter_table('gateway_email_subscriptions', schema=None) as batch_op:
        batch_op.create_index('ix_gateway_email_subscriptions_tenant', ['tenant', 'clinician_id'], unique=False)

    op.create_table('gateway_deliveries',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('target_id', sa.String(length=36), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('alert_id', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gateway_deliveries'))
    )
    with op.batch_alter_table('gateway_deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_gateway_deliveries_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_gateway_deliveries_target_id', ['target_id'], unique=False)

    op.create_table('gateway_delivery_attempts',
    sa.Column('delivery_id', sa.String(length=36), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('target_id', sa.String(length=36), nullable=False),
    sa.Column('attempted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('error', sa.String(length=40), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('delivery_id', 'attempt', name=op.f('pk_gateway_delivery_attempts'))
    )
    with op.batch_alter_table('gateway_delivery_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_gateway_delivery_attempts_target_id', ['target_id', 'attempted_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('gateway_delivery_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_gateway_delivery_attempts_target_id')

    op.drop_table('gateway_delivery_attempts')
    with op.batch_alter_table('gateway_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_gateway_deliveries_target_id')
        batch_op.drop_index('ix_gateway_deliveries_due')

    op.drop_table('gateway_deliveries')
    with op.batch_alter_table('gateway_email_subscriptions', schema=None) as batch_op:
        batch_op.drop_index('ix_gateway_email_subscriptions_tenant')

    op.drop_table('gateway_email_subscriptions')
    with op.batch_alter_table('gateway_webhook_endpoints', schema=None) as batch_op:
        batch_op.drop_index('ix_gateway_webhook_endpoints_tenant')

    op.drop_table('gateway_webhook_endpoints')
