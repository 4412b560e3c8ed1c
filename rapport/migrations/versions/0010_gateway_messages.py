"""the messages the gateway published for HTTP requests (issue 11: the poll URL, a reused Idempotency-Key)

`gateway_messages` has one row per message id the gateway published (keyed like `gateway_answers`,
by a digest of the tenant and the message id), written before the publish: the digest of the body
it was first sent with, and the endpoint's form. A poll of an id with no row is 404; a row without
every answer is 202; a key sent again with another body is refused. Pruned with the answers.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('gateway_messages',
    sa.Column('message_key', sa.String(length=64), nullable=False),
    sa.Column('body_digest', sa.String(length=64), nullable=False),
    sa.Column('form', sa.String(length=32), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('message_key', name=op.f('pk_gateway_messages'))
    )
    with op.batch_alter_table('gateway_messages', schema=None) as batch_op:
        batch_op.create_index('ix_gateway_messages_received_at', ['received_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('gateway_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_gateway_messages_received_at')

    op.drop_table('gateway_messages')
