"""each tenant's imported Questionnaires (issue 14: the per-tenant questionnaire map, wired)

`ingest_questionnaire_mappings` has one row per tenant and Questionnaire (canonical and version, keyed by
their digest): the instrument, and in `document` the linkId -> item map and the answer weights ingest reads
each response to that Questionnaire with. Written by `rapport questionnaires import`, read by ingest once
per batch for the batch's tenants.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ingest_questionnaire_mappings',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('questionnaire_key', sa.String(length=64), nullable=False),
    sa.Column('canonical', sa.String(length=1024), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=True),
    sa.Column('instrument', sa.String(length=32), nullable=False),
    sa.Column('imported_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('document', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
              nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'questionnaire_key', name=op.f('pk_ingest_questionnaire_mappings'))
    )


def downgrade() -> None:
    op.drop_table('ingest_questionnaire_mappings')
