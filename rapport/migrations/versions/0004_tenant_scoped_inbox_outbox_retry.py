"""inboxes keyed by a digest of tenant and message id; outbox rows wait before a retry

The inbox key was the message id alone, up to 200 characters: one tenant's message id could make
another tenant's message be ignored, and a longer id failed the write. It is now a SHA-256 of the
tenant and the message id (64 characters, whatever the sender chose). Rows of the old form cannot
be converted (they do not say their tenant) and are dropped: upgrade with the services stopped and
the streams drained, so no message is redelivered after the upgrade. Outbox rows get `attempts` and
`available_at`, so a row the broker refuses waits longer each time and never blocks the others.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

SERVICES = ('ingest', 'scoring', 'alerts')


def upgrade() -> None:
    for service in SERVICES:
        op.drop_table(f'{service}_inbox')
        op.create_table(f'{service}_inbox',
        sa.Column('message_key', sa.String(length=64), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('message_key', name=op.f(f'pk_{service}_inbox'))
        )
        with op.batch_alter_table(f'{service}_outbox', schema=None) as batch_op:
            batch_op.add_column(sa.Column('available_at', sa.DateTime(timezone=True), nullable=True))
            batch_op.add_column(sa.Column('attempts', sa.Integer(), server_default='0', nullable=False))
            batch_op.drop_index(f'ix_{service}_outbox_created_at')
        op.execute(f'UPDATE {service}_outbox SET available_at = created_at')
        with op.batch_alter_table(f'{service}_outbox', schema=None) as batch_op:
            batch_op.alter_column('available_at', existing_type=sa.DateTime(timezone=True), nullable=False)
            batch_op.create_index(f'ix_{service}_outbox_available_at', ['available_at'], unique=False)


def downgrade() -> None:
    for service in SERVICES:
        with op.batch_alter_table(f'{service}_outbox', schema=None) as batch_op:
            batch_op.drop_index(f'ix_{service}_outbox_available_at')
            batch_op.drop_column('attempts')
            batch_op.drop_column('available_at')
            batch_op.create_index(f'ix_{service}_outbox_created_at', ['created_at'], unique=False)
        op.drop_table(f'{service}_inbox')
        op.create_table(f'{service}_inbox',
        sa.Column('message_id', sa.String(length=200), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('message_id', name=op.f(f'pk_{service}_inbox'))
        )
