"""the tenants' standing rates, kept on their rows

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 11:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE on both databases (SQLite has it for adding and dropping columns since 3.35; a
    # batch operation would copy the table, which its foreign keys forbid once it has rows).
    op.add_column("tenants", sa.Column("metered_rate", sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column("tenants", sa.Column("committed_rate", sa.BigInteger(), nullable=False, server_default="0"))
    # Existing tenants' rates are summed by 0009, with the columns the sums read by then.

def downgrade() -> None:
    op.drop_column("tenants", "committed_rate")
    op.drop_column("tenants", "metered_rate")
