"""the clinician of an episode's appointments, in the gateway's attendance read model (issue 15)

`gateway_attendance.clinician_id` is the clinician the clinic's system named on the episode's latest
appointment that named one (`attendance.recorded`'s `clinician_id`), so an episode with appointments and
no score yet is listed for its clinician, and a clinician may open it. Null for rows recorded before
this revision and for episodes whose appointments name nobody (an ending never does).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('gateway_attendance', schema=None) as batch_op:
        batch_op.add_column(sa.Column('clinician_id', sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('gateway_attendance', schema=None) as batch_op:
        batch_op.drop_column('clinician_id')
