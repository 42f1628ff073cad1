"""The initial schema: objects, outbox and store metadata.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "objects",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(128), nullable=False),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("uid", sa.String(36), nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_index("ux_objects_key", "objects", ["kind", "namespace", "name"], unique=True)
    op.create_table(
        "outbox",
        sa.Column("revision", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(128), nullable=False),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("uid", sa.String(36), nullable=False),
        sa.Column("op", sa.String(16), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("prev", sa.Text, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )

    # One row per store fact; "store_uid" names this store's history in the change stream.
    op.create_table(
        "store_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("store_meta")
    op.drop_table("outbox")
    op.drop_index("ux_objects_key", "objects")
    op.drop_table("objects")
