"""a dashboard session's handle and how it was opened (issue 12: ending another user's session by hand)

`gateway_sessions.handle` is a random name for the session, unrelated to the cookie's id and to its
hash (the primary key), by which an admin's page lists and ends it; `credential` is how the session
was opened (`link`, `oidc`). Sessions already open get a fresh handle each and the credential
`unrecorded`: nobody is signed out by the upgrade.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('gateway_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('handle', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('credential', sa.String(length=16), nullable=True))
    sessions = sa.table('gateway_sessions', sa.column('session_key', sa.String), sa.column('handle', sa.String),
                        sa.column('credential', sa.String))
    connection = op.get_bind()
    for (key,) in connection.execute(sa.select(sessions.c.session_key)).all():
        connection.execute(sessions.update().where(sessions.c.session_key == key)
                           .values(handle=secrets.token_urlsafe(16), credential='unrecorded'))
    with op.batch_alter_table('gateway_sessions', schema=None) as batch_op:
        batch_op.alter_column('handle', existing_type=sa.String(length=32), nullable=False)
        batch_op.alter_column('credential', existing_type=sa.String(length=16), nullable=False)
        batch_op.create_index('ix_gateway_sessions_handle', ['handle'], unique=True)
        batch_op.create_index('ix_gateway_sessions_tenant', ['tenant', 'expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('gateway_sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_gateway_sessions_tenant')
        batch_op.drop_index('ix_gateway_sessions_handle')
        batch_op.drop_column('credential')
        batch_op.drop_column('handle')
