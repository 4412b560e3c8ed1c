"""the identity provider's ID token of a dashboard session (issue 12: single sign-out at the provider)

`gateway_sessions.id_token` keeps the ID token of a session the OIDC code flow opened, so Sign out can
send it to the provider's `end_session_endpoint` as `id_token_hint`; null for a login link's session and
for sessions opened before this revision (their Sign out ends Rapport's session only). Deleted with
the session.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('gateway_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('id_token', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('gateway_sessions', schema=None) as batch_op:
        batch_op.drop_column('id_token')
