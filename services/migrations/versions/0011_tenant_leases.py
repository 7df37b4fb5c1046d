"""A tenant's own lease policy: its default and longest lease, in hours (null: the operator's settings)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 23:55:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenants", sa.Column("lease_default_hours", sa.Double(), nullable=True))
    op.add_column("tenants", sa.Column("lease_max_hours", sa.Double(), nullable=True))


def downgrade() -> None:
    op.drop_column("tenants", "lease_max_hours")
    op.drop_column("tenants", "lease_default_hours")
