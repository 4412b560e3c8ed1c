"""a webhook secret's changeover after a rotation (issue 11: rotating a secret)

`gateway_webhook_endpoints.previous_secret` keeps the secret a rotation replaced, and
`previous_secret_until` until when tries are signed with it beside the new one (24 hours after the
rotation); both null when there was no rotation. A later rotation overwrites them.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('gateway_webhook_endpoints', schema=None) as batch_op:
        batch_op.add_column(sa.Column('previous_secret', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('previous_secret_until', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('gateway_webhook_endpoints', schema=None) as batch_op:
        batch_op.drop_column('previous_secret_until')
        batch_op.drop_column('previous_secret')
