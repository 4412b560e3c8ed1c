"""each tenant's clinical policy, versioned, and the version each alert ran under (issue 13)

`alerts_policies` has one row per tenant and policy version (never changed once written; the highest
version is the one the rules run under): who signed it off and when, and in `document` the values it sets
(which rules run for which instruments, their thresholds). Written by `rapport policy set`, read by the
alerts service once per batch for the batch's tenants. `alerts_alerts.policy_version` is the version the
rules last moved an alert under (0: no policy set; null: an alert from before policies).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alerts_policies',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('signed_off_by', sa.String(length=128), nullable=False),
    sa.Column('signed_off_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('document', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
              nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'version', name=op.f('pk_alerts_policies'))
    )
    with op.batch_alter_table('alerts_alerts') as batch:
        batch.add_column(sa.Column('policy_version', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('alerts_alerts') as batch:
        batch.drop_column('policy_version')
    op.drop_table('alerts_policies')
