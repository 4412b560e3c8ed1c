"""dashboard sessions, one-time login links and the audit trail (issues 11 item 4, 12 item 5)

`gateway_sign_in_links` holds the `jti` of every sign-in link used (its primary key refuses a second
use) until the link has expired; `gateway_sessions` one row per signed-in browser, keyed by the
SHA-256 of the cookie's random id. `gateway_audit` is the append-only audit trail: triggers on
both databases refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL) of its rows.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

REFUSAL = "gateway_audit is append-only"


def upgrade() -> None:
    op.create_table('gateway_audit',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=True),
    sa.Column('subject', sa.String(length=255), nullable=True),
    sa.Column('role', sa.String(length=16), nullable=True),
    sa.Column('clinician', sa.String(length=128), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('resource', sa.String(length=300), nullable=True),
    sa.Column('client_address', sa.String(length=64), nullable=True),
    sa.Column('credential', sa.String(length=16), nullable=True),
    sa.Column('outcome', sa.Integer(), nullable=False),
    sa.Column('detail', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gateway_audit'))
    )
    with op.batch_alter_table('gateway_audit', schema=None) as batch_op:
        batch_op.create_index('ix_gateway_audit_tenant_at', ['tenant', 'at'], unique=False)
        batch_op.create_index('ix_gateway_audit_tenant_subject', ['tenant', 'subject'], unique=False)

    op.create_table('gateway_sessions',
    sa.Column('session_key', sa.String(length=64), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('subject', sa.String(length=255), nullable=False),
    sa.Column('clinician', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('session_key', name=op.f('pk_gateway_sessions'))
    )
    with op.batch_alter_table('gateway_sessions', schema=None) as batch_op:
        batch_op.create_index('ix_gateway_sessions_expires_at', ['expires_at'], unique=False)

    op.create_table('gateway_sign_in_links',
    sa.Column('jti', sa.String(length=64), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('jti', name=op.f('pk_gateway_sign_in_links'))
    )
    with op.batch_alter_table('gateway_sign_in_links', schema=None) as batch_op:
        batch_op.create_index('ix_gateway_sign_in_links_expires_at', ['expires_at'], unique=False)

    if op.get_context().dialect.name == "postgresql":
        op.execute("CREATE FUNCTION gateway_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
                   f"$$ BEGIN RAISE EXCEPTION '{REFUSAL}'; END $$")
        op.execute("CREATE TRIGGER gateway_audit_append_only BEFORE UPDATE OR DELETE ON gateway_audit "
                   "FOR EACH ROW EXECUTE FUNCTION gateway_audit_append_only()")
        op.execute("CREATE TRIGGER gateway_audit_no_truncate BEFORE TRUNCATE ON gateway_audit "
                   "FOR EACH STATEMENT EXECUTE FUNCTION gateway_audit_append_only()")
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER gateway_audit_no_{verb.lower()} BEFORE {verb} ON gateway_audit "
                       f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS gateway_audit_no_truncate ON gateway_audit")
        op.execute("DROP TRIGGER IF EXISTS gateway_audit_append_only ON gateway_audit")
        op.execute("DROP FUNCTION IF EXISTS gateway_audit_append_only()")
    else:
        for verb in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS gateway_audit_no_{verb}")

    with op.batch_alter_table('gateway_sign_in_links', schema=None) as batch_op:
        batch_op.drop_index('ix_gateway_sign_in_links_expires_at')

    op.drop_table('gateway_sign_in_links')
    with op.batch_alter_table('gateway_sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_gateway_sessions_expires_at')

    op.drop_table('gateway_sessions')
    with op.batch_alter_table('gateway_audit', schema=None) as batch_op:
        batch_op.drop_index('ix_gateway_audit_tenant_subject')
        batch_op.drop_index('ix_gateway_audit_tenant_at')

    op.drop_table('gateway_audit')
